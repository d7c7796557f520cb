"""Extraction from Metronome into DuckDB: paging that cannot loop, bounded per-customer concurrency, and a
columnar usage path (raw JSON page → Arrow → Parquet spill → one DuckDB transaction).

Plain functions over an SDK client and a DuckDB connection, so tests and the benchmark call them without Dagster.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import metronome
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from retention_pipeline.redact import redact
from retention_pipeline.source.tables import USAGE_TABLE, RawTable
from retention_pipeline.warehouse import transaction

Log = Callable[[str], None]


class ExtractionError(RuntimeError):
    """Metronome answered in a way we cannot load; the message names the endpoint (and customer)."""


# ---------------------------------------------------------------------------------------------------- paging


def _cursor(page) -> str | None:
    return getattr(page, "next_page", None) or getattr(page, "cursor", None)


MAX_EMPTY_PAGES = 10


def iter_items(first_page, endpoint: str) -> Iterator:
    """Every item of an SDK page and its successors, never looping and never dropping rows silently.

    A page with no `data` key is an error (not an empty list). An empty page that still carries a cursor is
    followed, since rows may come after it (the SDK's auto-pager would loop on it if it repeats); the same cursor
    coming back on an empty page means "caught up" and ends paging; a cursor repeating with data, or more than
    MAX_EMPTY_PAGES empty pages in a row, is an error.
    """
    page, seen, empty_run = first_page, set(), 0
    while True:
        if "data" not in page.model_fields_set:
            raise ExtractionError(f"{endpoint}: answer without `data`; refusing to read it as an empty list")
        cursor = _cursor(page)
        if page.data:
            empty_run = 0
            yield from page.data
        else:
            empty_run += 1
            if empty_run > MAX_EMPTY_PAGES:
                raise ExtractionError(
                    f"{endpoint}: {empty_run} empty pages in a row that still carry a cursor"
                )
        if not cursor:
            return
        if cursor in seen:
            if not page.data:
                return
            raise ExtractionError(f"{endpoint}: cursor {cursor[:24]}… repeated; refusing to loop")
        seen.add(cursor)
        page = page.get_next_page()


def describe(exc: Exception) -> str:
    """An SDK or parse error as the run's failure message may show it: Metronome's words (which can quote a
    customer's email or phone, or a URL with credentials) redacted. Callers raise `from None`: chained, the SDK's
    exception would carry the whole unredacted body into the event log."""
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    return redact(f"HTTP {status}: {message or exc}" if status else str(exc))


# ------------------------------------------------------------------------------------------------ snapshots


@dataclass
class SnapshotStats:
    rows: int = 0
    requests_customers: int = 0
    missing_customers: list[str] = field(default_factory=list)
    seconds: float = 0.0


def fetch_customers(client: metronome.Metronome) -> list[tuple[str | None, str]]:
    """Active and archived customers: the default list returns only active ones, so two passes."""
    records = []
    for only_archived in (False, True):
        endpoint = f"GET /v1/customers (only_archived={only_archived})"
        try:
            page = client.v1.customers.list(limit=100, only_archived=only_archived)
            records += [(None, c.to_json(indent=None)) for c in iter_items(page, endpoint)]
        except metronome.APIError as exc:
            raise ExtractionError(f"{endpoint} failed: {describe(exc)}") from None
        except ValueError as exc:  # a 200 whose body is not the JSON the endpoint promises
            raise ExtractionError(f"{endpoint} returned an unreadable body: {describe(exc)}") from None
    return records


def fetch_billable_metrics(client: metronome.Metronome) -> list[tuple[str | None, str]]:
    endpoint = "GET /v1/billable-metrics"
    try:
        page = client.v1.billable_metrics.list(include_archived=True, limit=100)
        return [(None, m.to_json(indent=None)) for m in iter_items(page, endpoint)]
    except metronome.APIError as exc:
        raise ExtractionError(f"{endpoint} failed: {describe(exc)}") from None
    except ValueError as exc:
        raise ExtractionError(f"{endpoint} returned an unreadable body: {describe(exc)}") from None


def _contracts(client: metronome.Metronome, customer_id: str):
    return client.v2.contracts.list(customer_id=customer_id, include_archived=True, limit=20)


def _invoices(client: metronome.Metronome, customer_id: str):
    return client.v1.customers.invoices.list(customer_id=customer_id, sort="date_asc", limit=100)


def _balances(client: metronome.Metronome, customer_id: str):
    return client.v1.contracts.list_balances(
        customer_id=customer_id,
        include_balance=True,
        include_contract_balances=True,
        include_ledgers=True,
        include_archived=True,
        limit=25,
    )


PER_CUSTOMER_ENDPOINTS: dict[str, tuple[str, Callable]] = {
    "contracts": ("POST /v2/contracts/list", _contracts),
    "invoices": ("GET /v1/customers/{id}/invoices", _invoices),
    "balances": ("POST /v1/contracts/customerBalances/list", _balances),
}


def fetch_per_customer(
    client: metronome.Metronome,
    kind: str,
    customer_ids: list[str],
    concurrency: int,
    log: Log,
    progress_every_s: float = 5.0,
) -> tuple[list[tuple[str | None, str]], SnapshotStats]:
    """One endpoint for every customer, `concurrency` at a time, with a progress line every few seconds.

    A customer deleted between the customer list and this call (404) is skipped and reported; any other error
    fails the run naming the endpoint and customer, so a partial snapshot never replaces a complete one.
    """
    endpoint, call = PER_CUSTOMER_ENDPOINTS[kind]
    stats, records = SnapshotStats(), []
    started = last_log = time.monotonic()

    def one(customer_id: str) -> list[tuple[str, str]]:
        try:
            return [
                (customer_id, o.to_json(indent=None)) for o in iter_items(call(client, customer_id), endpoint)
            ]
        except metronome.NotFoundError:
            stats.missing_customers.append(customer_id)
            return []
        except metronome.APIError as exc:
            raise ExtractionError(f"{endpoint} failed for customer {customer_id}: {describe(exc)}") from None
        except ValueError as exc:
            raise ExtractionError(
                f"{endpoint} returned an unreadable body for customer {customer_id}: {describe(exc)}"
            ) from None

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"metronome-{kind}") as pool:
        futures = [pool.submit(one, cid) for cid in customer_ids]
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                records += future.result()
                now = time.monotonic()
                if now - last_log >= progress_every_s or done == len(futures):
                    log(
                        f"{kind}: {done}/{len(futures)} customers, {len(records)} objects, {now - started:.1f}s"
                    )
                    last_log = now
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    stats.rows, stats.requests_customers = len(records), len(customer_ids)
    stats.seconds = time.monotonic() - started
    return records, stats


def replace_snapshot(
    con: duckdb.DuckDBPyConnection,
    table: RawTable,
    records: list[tuple[str | None, str]],
    extracted_at: datetime,
) -> int:
    """Replace a snapshot table in one transaction (readers see the old or the new snapshot, never half).

    Rows repeated across pages are kept once (last seen wins)."""
    frame = pd.DataFrame(records, columns=["ctx_customer_id", "raw"], dtype="string")
    frame["ord"] = range(len(frame))
    con.register("snapshot_rows", frame)
    try:
        with transaction(con):
            con.execute(f"DELETE FROM {table.name}")
            con.execute(
                f"""
                INSERT INTO {table.name}
                SELECT {table.select}, ?::TIMESTAMP
                FROM (SELECT raw::JSON AS j, ctx_customer_id, ord FROM snapshot_rows)
                QUALIFY row_number() OVER (PARTITION BY j->>'id' ORDER BY ord DESC) = 1
                """,
                [extracted_at.replace(tzinfo=None)],
            )
    finally:
        con.unregister("snapshot_rows")
    return con.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]


# ---------------------------------------------------------------------------------------------------- usage

# Timestamps are parsed by Arrow's ISO-8601 reader (`Z` or any ±hh:mm offset → UTC), then stored naive UTC like
# every timestamp in the warehouse: no per-row string conversion in DuckDB.
_USAGE_FIELDS = [
    ("customer_id", pa.string()),
    ("billable_metric_id", pa.string()),
    ("billable_metric_name", pa.string()),
    ("start_timestamp", pa.timestamp("ms", tz="UTC")),
    ("end_timestamp", pa.timestamp("ms", tz="UTC")),
    ("value", pa.float64()),
]
_USAGE_ROW = pa.struct(_USAGE_FIELDS)
_USAGE_STORED = pa.schema(
    [(name, pa.timestamp("ms") if pa.types.is_timestamp(kind) else kind) for name, kind in _USAGE_FIELDS]
)
_USAGE_PAGE = pa.schema([("data", pa.list_(_USAGE_ROW)), ("next_page", pa.string())])
_PARSE = pa_json.ParseOptions(
    explicit_schema=_USAGE_PAGE, unexpected_field_behavior="ignore", newlines_in_values=True
)


def parse_usage_page(body: bytes) -> tuple[pa.Table, str | None]:
    """A POST /v1/usage page (raw bytes) → (Arrow table of rows, naive-UTC timestamps; next cursor), without a
    Python object per row."""
    if b'"data"' not in body:
        raise ExtractionError("POST /v1/usage returned a body that is not a usage page (no `data` array)")
    page = pa_json.read_json(io.BytesIO(body), parse_options=_PARSE)
    rows = pc.list_flatten(page.column("data"))
    table = pa.Table.from_batches(
        [pa.RecordBatch.from_struct_array(chunk) for chunk in rows.chunks], schema=pa.schema(_USAGE_ROW)
    )
    return table.cast(_USAGE_STORED), page.column("next_page")[0].as_py()


def floor_day(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_day(ts: datetime) -> datetime:
    floored = floor_day(ts)
    return floored if floored == ts else floored + timedelta(days=1)


@dataclass(frozen=True)
class UsageWindow:
    """What one usage materialization asks Metronome for and which stored rows it replaces.

    Metronome's /v1/usage takes midnight-aligned ranges, so hour windows are requested by whole days and only the
    hours that end by `keep_end` (the partition end) are kept."""

    window_size: str  # "HOUR" | "DAY"
    request_start: datetime
    request_end: datetime
    keep_end: datetime

    @classmethod
    def for_partition(
        cls, window_size: str, start: datetime, end: datetime, lookback_days: int, history_days: int | None
    ) -> UsageWindow:
        """`history_days` set (first run on an empty table) widens the start to backfill that much history."""
        request_start = floor_day(start - timedelta(days=lookback_days))
        if history_days is not None:
            request_start = min(request_start, floor_day(end - timedelta(days=history_days)))
        return cls(window_size, request_start, ceil_day(end), end)


def day_chunks(start: datetime, end: datetime, days: int) -> Iterable[tuple[datetime, datetime]]:
    cursor = start
    while cursor < end:
        chunk_end = min(cursor + timedelta(days=days), end)
        yield cursor, chunk_end
        cursor = chunk_end


@dataclass
class UsageStats:
    requests: int = 0
    pages: int = 0
    rows_fetched: int = 0
    rows_written: int = 0
    seconds: float = 0.0


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fetch_usage_pages(
    client: metronome.Metronome,
    window: UsageWindow,
    spill_dir: Path,
    chunk_days: int,
    log: Log,
    stats: UsageStats,
    concurrency: int = 1,
) -> list[Path]:
    """Page POST /v1/usage over the window in day-aligned chunks, spilling each page to Parquet.

    Each chunk has its own cursor, so chunks are paged concurrently (a backfill of 180 days is 6 chunks); within a
    chunk paging is sequential because each page's cursor is read from it. The first failing chunk stops the
    others at their next page and its error is raised."""
    chunks = list(day_chunks(window.request_start, window.request_end, chunk_days))
    stop, lock = threading.Event(), threading.Lock()

    def fetch(numbered: tuple[int, tuple[datetime, datetime]]) -> list[Path]:
        number, (chunk_start, chunk_end) = numbered
        try:
            files, requests, rows = _fetch_chunk(
                client, window, chunk_start, chunk_end, spill_dir, number, stop
            )
        except BaseException:
            stop.set()
            raise
        with lock:
            stats.requests += requests
            stats.pages += len(files)
            stats.rows_fetched += rows
        log(f"usage {window.window_size} {chunk_start:%Y-%m-%d}..{chunk_end:%Y-%m-%d}: {rows:,} rows")
        return files

    workers = max(1, min(concurrency, len(chunks)))
    if workers == 1:
        return [path for numbered in enumerate(chunks) for path in fetch(numbered)]
    with ThreadPoolExecutor(workers, thread_name_prefix="metronome-usage") as pool:
        return [path for files in pool.map(fetch, enumerate(chunks)) for path in files]


def _fetch_chunk(
    client: metronome.Metronome,
    window: UsageWindow,
    chunk_start: datetime,
    chunk_end: datetime,
    spill_dir: Path,
    number: int,
    stop: threading.Event,
) -> tuple[list[Path], int, int]:
    """One chunk's pages → (Parquet files, requests, rows). Never loops: a repeated cursor with rows is an error;
    an empty page with a cursor is followed (rows may come after it), the same cursor back means caught up."""
    files: list[Path] = []
    cursor, seen, rows, requests, empty_run = None, set(), 0, 0, 0
    while not stop.is_set():
        try:
            response = client.v1.usage.with_raw_response.list(
                starting_on=_iso(chunk_start),
                ending_before=_iso(chunk_end),
                window_size=window.window_size,
                **({"next_page": cursor} if cursor else {}),
            )
        except metronome.APIError as exc:
            raise ExtractionError(
                f"POST /v1/usage {window.window_size} {_iso(chunk_start)}..{_iso(chunk_end)} failed: "
                f"{describe(exc)}"
            ) from None
        try:
            table, cursor_next = parse_usage_page(response.http_response.content)
        except (pa.ArrowInvalid, ValueError) as exc:
            raise ExtractionError(
                f"POST /v1/usage returned a body that is not a usage page: {describe(exc)}"
            ) from None
        requests += 1
        if table.num_rows:
            empty_run = 0
            path = spill_dir / f"chunk-{number:03d}-page-{len(files):06d}.parquet"
            pq.write_table(table, path)
            files.append(path)
            rows += table.num_rows
        else:  # an empty page with a cursor is followed: rows may come after it
            empty_run += 1
            if empty_run > MAX_EMPTY_PAGES:
                raise ExtractionError(f"POST /v1/usage: {empty_run} empty pages in a row that carry a cursor")
        if not cursor_next:
            break
        if cursor_next in seen:
            if not table.num_rows:
                break  # the same cursor came back with nothing new
            raise ExtractionError(f"POST /v1/usage: cursor {cursor_next[:24]}… repeated; refusing to loop")
        seen.add(cursor_next)
        cursor = cursor_next
    return files, requests, rows


def replace_usage_window(
    con: duckdb.DuckDBPyConnection, window: UsageWindow, files: list[Path], extracted_at: datetime
) -> int:
    """Delete the window's stored rows and insert the fetched ones in one transaction: no duplicates, no gaps.

    A row repeated across pages is kept once."""
    start, keep_end = window.request_start.replace(tzinfo=None), window.keep_end.replace(tzinfo=None)
    with transaction(con):
        con.execute(
            f"DELETE FROM {USAGE_TABLE} WHERE window_size = ? AND start_timestamp >= ? AND start_timestamp < ?",
            [window.window_size, start, keep_end],
        )
        written = 0
        if files:
            written = con.execute(
                f"""
                INSERT INTO {USAGE_TABLE}
                SELECT DISTINCT ON (customer_id, billable_metric_id, start_timestamp)
                       customer_id, billable_metric_id, billable_metric_name, ?, start_timestamp, end_timestamp,
                       value, ?::TIMESTAMP
                FROM read_parquet(?)
                WHERE start_timestamp >= ? AND end_timestamp <= ?
                """,
                [
                    window.window_size,
                    extracted_at.replace(tzinfo=None),
                    [str(f) for f in files],
                    start,
                    keep_end,
                ],
            ).fetchone()[0]
    return written


def extract_usage(
    client: metronome.Metronome,
    connect: Callable[[], duckdb.DuckDBPyConnection],
    window: UsageWindow,
    chunk_days: int,
    log: Log,
    concurrency: int = 1,
) -> UsageStats:
    """Fetch (without holding the DuckDB lock, `concurrency` chunks at a time) then replace the window in one
    short write."""
    stats, started = UsageStats(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="metronome-usage-") as spill:
        files = fetch_usage_pages(client, window, Path(spill), chunk_days, log, stats, concurrency)
        with connect() as con:
            stats.rows_written = replace_usage_window(con, window, files, datetime.now(UTC))
    stats.seconds = time.monotonic() - started
    return stats
