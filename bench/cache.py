"""Synthetic tenants, generated once and cached under bench/.cache/: recorded Metronome usage pages (replayed to
the real SDK), a base DuckDB file with every raw snapshot table, and usage history as Parquet.

Everything is derived from the sandbox generator with a pinned clock, and a directory's name carries a digest of the
generator's source, so a cache directory is a pure function of its name (a changed generator gets new directories);
a `done` marker is written last, so an interrupted build is simply rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import metronome

CACHE_VERSION = 1
NOW = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)  # the tenant clock: day 2026-11-19 is the last complete one
LAST_DAY = datetime(2026, 11, 19, tzinfo=UTC)  # the daily partition every stage runs
AS_OF = LAST_DAY + timedelta(days=1)  # that partition's end (its features' as_of)
SEED = 42
METRICS = 3
USAGE_PAGE_SIZE = 5000  # the sandbox's default server-chosen page size
LOOKBACK_DAYS = 3  # RETENTION_USAGE_LOOKBACK_DAYS default
DAY_CHUNK_DAYS = 31  # what the daily usage asset requests per call (source.assets.USAGE_CHUNK_DAYS)
DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"
SANDBOX_TOKEN = "bench"
GENERATOR_DIR = Path(__file__).resolve().parents[1] / "retention_pipeline" / "sandbox" / "metronome"


@functools.cache
def generator_digest() -> str:
    """The sandbox tenant generator and server source, hashed: a tenant cached by another version of them (e.g.
    before its churn dynamics changed) is not reused."""
    digest = hashlib.sha256()
    for path in sorted(GENERATOR_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]


def _noop(message: str) -> None:
    """Extraction progress lines are not part of what is measured."""


@dataclass(frozen=True)
class Tenant:
    """One cached tenant: `customers` × `history_days` × 3 metrics at the pinned clock, and what a role needs of
    it (`main`: the backfill pages loaded into base.duckdb; `history`: usage history and the daily run's pages;
    `churn`: the whole history as day windows in base.duckdb). `generator` is the generator digest its name carries:
    the bench takes it once per run, so every child of a run finds the tenant the run prepared."""

    customers: int
    history_days: int
    root: Path
    role: str = "main"
    generator: str = field(default_factory=lambda: generator_digest())

    @property
    def dir(self) -> Path:
        name = (
            f"v{CACHE_VERSION}-s{SEED}-c{self.customers}-h{self.history_days}-m{METRICS}-{NOW:%Y%m%dT%H}"
            f"-g{self.generator}"
        )
        return self.root / f"{name}-{self.role}"

    def spec(self):
        from retention_pipeline.sandbox.metronome.tenant import TenantSpec

        return TenantSpec(
            seed=SEED, customers=self.customers, history_days=self.history_days, metrics=METRICS, now=NOW
        )

    @property
    def base_db(self) -> Path:
        return self.dir / "base.duckdb"

    def pages_dir(self, name: str) -> Path:
        return self.dir / "pages" / name

    @property
    def history_dir(self) -> Path:
        return self.dir / "usage-history"

    @property
    def ready(self) -> bool:
        return (self.dir / "done").exists()


def backfill_window(days: int):
    """The daily partition's first run on an empty file: `days` of day windows (UsageWindow.for_partition)."""
    from retention_pipeline.source.extract import UsageWindow

    return UsageWindow.for_partition("DAY", LAST_DAY, AS_OF, LOOKBACK_DAYS, days)


def daily_window(day: datetime = LAST_DAY):
    """A daily run on a non-empty file: the day plus the late-data lookback."""
    from retention_pipeline.source.extract import UsageWindow

    return UsageWindow.for_partition("DAY", day, day + timedelta(days=1), LOOKBACK_DAYS, None)


# --------------------------------------------------------------------------------------------- wire replay


def _request_key(request: httpx.Request) -> str:
    body = json.loads(request.content or b"null")
    query = sorted(request.url.params.multi_items())
    canonical = json.dumps([request.method, request.url.path, body, query], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


class RecordingTransport(httpx.BaseTransport):
    """Answers from the sandbox and writes every response body to `folder`, indexed by the request."""

    def __init__(self, sandbox, folder: Path) -> None:
        self.sandbox, self.folder, self.index = sandbox, folder, {}
        folder.mkdir(parents=True, exist_ok=True)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        response = self.sandbox.handle(request)
        if response.status_code != 200:
            raise RuntimeError(
                f"sandbox answered {response.status_code} while recording: {response.text[:200]}"
            )
        name = f"page-{len(self.index):06d}.json"
        (self.folder / name).write_bytes(response.content)
        self.index[_request_key(request)] = name
        return response

    def save(self) -> None:
        (self.folder / "index.json").write_text(json.dumps(self.index, indent=0))


class ReplayTransport(httpx.BaseTransport):
    """Serves recorded Metronome pages from disk: the real SDK and parser run, the sandbox's cost does not."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index = json.loads((folder / "index.json").read_text())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        name = self.index.get(_request_key(request))
        if name is None:
            return httpx.Response(400, json={"message": "bench replay: request was not recorded"})
        return httpx.Response(
            200, headers={"Content-Type": "application/json"}, content=(self.folder / name).read_bytes()
        )


def metronome_client(transport: httpx.BaseTransport) -> metronome.Metronome:
    return metronome.Metronome(
        bearer_token=SANDBOX_TOKEN,
        base_url="http://metronome.bench.invalid",
        max_retries=0,
        http_client=metronome.DefaultHttpxClient(transport=transport),
    )


def page_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("page-*.json"))


def pages_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in page_files(folder))


# ------------------------------------------------------------------------------------------------- building


def connect(path: Path):
    """The pipeline's own connection (session macros included), as every stage uses it."""
    from retention_pipeline.warehouse import DuckDBWarehouse

    return DuckDBWarehouse(path=str(path)).connect()


def load_snapshots(db: Path, tenant) -> None:
    """Raw snapshot tables exactly as extraction writes them, from the objects the endpoints return.

    One connection per table, as each extraction asset has (replace_snapshot leaves its count result open)."""
    from retention_pipeline.source.contacts import load_contacts
    from retention_pipeline.source.extract import replace_snapshot
    from retention_pipeline.source.tables import (
        BALANCES,
        BILLABLE_METRICS,
        CONTRACTS,
        CUSTOMERS,
        INVOICES,
        create_raw_tables,
    )

    def per_customer(objects: dict[str, list[dict]]) -> list[tuple[str, str]]:
        return [(cid, json.dumps(o)) for cid, items in objects.items() for o in items]

    snapshots = [
        (CUSTOMERS, [(None, json.dumps(c)) for c in tenant.customers]),
        (BILLABLE_METRICS, [(None, json.dumps(m)) for m in tenant.billable_metrics]),
        (CONTRACTS, per_customer(tenant.contracts)),
        (INVOICES, per_customer(tenant.invoices)),
        (BALANCES, per_customer(tenant.balances)),
    ]
    with connect(db) as con:
        create_raw_tables(con)
    for table, records in snapshots:
        with connect(db) as con:
            replace_snapshot(con, table, records, NOW)
    people = tenant.contacts_frame()
    with connect(db) as con:
        load_contacts(con, people.assign(source_row=range(2, len(people) + 2)), [], "US")


def record_pages(tenant, window, folder: Path) -> None:
    """Page POST /v1/usage over `window` with the pipeline's own pager, keeping every page on disk."""
    from retention_pipeline.sandbox.metronome.server import MetronomeSandbox
    from retention_pipeline.source.extract import UsageStats, fetch_usage_pages

    if folder.exists():
        shutil.rmtree(folder)
    recorder = RecordingTransport(MetronomeSandbox(tenant, usage_page_size=USAGE_PAGE_SIZE), folder)
    with tempfile.TemporaryDirectory(prefix="bench-record-") as spill, metronome_client(recorder) as client:
        fetch_usage_pages(client, window, Path(spill), DAY_CHUNK_DAYS, _noop, UsageStats())
    recorder.save()


def ingest_pages(db: Path, window, folder: Path):
    """The pipeline's usage extraction (extract_usage) from recorded pages into `db`; returns its UsageStats."""
    from retention_pipeline.source.extract import extract_usage
    from retention_pipeline.source.tables import create_raw_tables

    with connect(db) as con:
        create_raw_tables(con)
    from retention_pipeline.source.assets import USAGE_CHUNK_CONCURRENCY

    with metronome_client(ReplayTransport(folder)) as client:  # chunks paged concurrently, as the asset does
        return extract_usage(
            client, lambda: connect(db), window, DAY_CHUNK_DAYS, _noop, concurrency=USAGE_CHUNK_CONCURRENCY
        )


def write_history(
    tenant, start: datetime, end: datetime, folder: Path, customers_per_file: int = 5000
) -> None:
    """Day-window usage in [start, end) as Parquet files in raw.metronome_usage's column order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    ids = list(tenant.customer_ids)
    for part, offset in enumerate(range(0, len(ids), customers_per_file)):
        frame = tenant.usage_frame("DAY", start, end, customer_ids=ids[offset : offset + customers_per_file])
        frame.insert(3, "window_size", "DAY")
        for column in ("start_timestamp", "end_timestamp"):
            frame[column] = frame[column].dt.tz_convert(None)
        frame["extracted_at"] = NOW.replace(tzinfo=None)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"part-{part:05d}.parquet")


def load_day_usage(db: Path, tenant, days: int, folder: Path) -> int:
    """Day-window usage of the last `days` complete days (up to AS_OF) straight into raw.metronome_usage of `db`,
    without recording or replaying pages: the churn tenant's whole history, for stages that measure what happens
    after extraction (the ingestion stage measures extraction). Returns the rows loaded."""
    write_history(tenant, AS_OF - timedelta(days=days), AS_OF, folder)
    with connect(db) as con:
        con.execute(
            "INSERT INTO raw.metronome_usage SELECT * FROM read_parquet(?)", [str(folder / "*.parquet")]
        )
        rows = con.execute("SELECT count(*) FROM raw.metronome_usage").fetchone()[0]
    shutil.rmtree(folder)
    return rows


def build(
    tenant_cache: Tenant,
    *,
    main_days: int | None,
    history_days: int | None,
    day_usage: bool = False,
    log=print,
) -> None:
    """Build everything the stages read for one tenant (idempotent; skipped when already built).

    main_days: record the `main_days` backfill pages and load them into base.duckdb (the main tenant).
    history_days: write that much usage history before LAST_DAY as Parquet and record the daily run's pages
    (the incremental tenant).
    day_usage: load the tenant's whole history as day windows into base.duckdb, no pages (the churn tenant)."""
    from retention_pipeline.sandbox.metronome.tenant import build_tenant

    if tenant_cache.ready:
        return
    if tenant_cache.dir.exists():
        shutil.rmtree(tenant_cache.dir)
    tenant_cache.dir.mkdir(parents=True)
    log(f"generating tenant {tenant_cache.dir.name}")
    tenant = build_tenant(tenant_cache.spec())
    load_snapshots(tenant_cache.base_db, tenant)
    if main_days is not None:
        window = backfill_window(main_days)
        record_pages(tenant, window, tenant_cache.pages_dir("backfill"))
        ingest_pages(tenant_cache.base_db, window, tenant_cache.pages_dir("backfill"))
    if history_days is not None:
        write_history(tenant, LAST_DAY - timedelta(days=history_days), LAST_DAY, tenant_cache.history_dir)
        record_pages(tenant, daily_window(), tenant_cache.pages_dir("daily"))
    if day_usage:
        load_day_usage(
            tenant_cache.base_db, tenant, tenant_cache.history_days, tenant_cache.dir / "day-usage"
        )
    (tenant_cache.dir / "done").write_text(datetime.now(UTC).isoformat())
