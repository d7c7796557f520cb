"""Extraction assets: Metronome objects and contacts into the DuckDB `raw` schema."""

import functools
import time
from datetime import UTC, datetime

import dagster as dg

from retention_pipeline.catalog import Declaration, declarations_of
from retention_pipeline.config import ConfigError, positive_int
from retention_pipeline.environment import BINDINGS_KEY, verify_bindings
from retention_pipeline.partitions import partitioned_asset
from retention_pipeline.redact import redact
from retention_pipeline.source import extract
from retention_pipeline.source.contacts import (
    ContactsResource,
    empty_contacts_frame,
    load_contacts,
    read_contacts_csv,
)
from retention_pipeline.source.metronome import MetronomeResource
from retention_pipeline.source.tables import (
    BALANCES,
    BILLABLE_METRICS,
    CONTRACTS,
    CUSTOMERS,
    INVOICES,
    USAGE_TABLE,
    RawTable,
    create_raw_tables,
)
from retention_pipeline.warehouse import DuckDBWarehouse

GROUP = "source"
KINDS = {"metronome", "duckdb"}
# External I/O retried by Dagster on top of the SDK's per-request retries (a whole-step hiccup, e.g. a reset).
EXTERNAL_RETRY = dg.RetryPolicy(
    max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
USAGE_CHUNK_DAYS = {"DAY": 31, "HOUR": 7}
USAGE_CHUNK_CONCURRENCY = 4  # usage chunks paged at once (capped by RETENTION_METRONOME_CONCURRENCY)
# What a raw table's preview shows: ids, states, amounts, timestamps, and counts or keys of the nested parts. The
# event log is read more widely than the warehouse, and free text someone typed (customer and contract names,
# external ids, ingest aliases, custom field values, invoice and ledger JSON) can hold an email or a phone.
PREVIEW_COLUMNS = {
    CUSTOMERS.name: "id, billable_status, is_archived, created_at, archived_at, "
    "len(ingest_aliases) AS ingest_aliases, json_keys(custom_fields) AS custom_field_keys",
    BILLABLE_METRICS.name: "id, name, aggregation_type, archived_at",
    CONTRACTS.name: "id, customer_id, rate_card_id, starting_at, ending_before, archived_at, "
    "json_array_length(commits) AS commits, json_array_length(credits) AS credits",
    INVOICES.name: "id, customer_id, status, type, total, credit_type_name, start_timestamp, end_timestamp, "
    "issued_at, external_status",
    BALANCES.name: "id, customer_id, type, product_name, credit_type_name, balance, created_at, archived_at, "
    "json_array_length(ledger) AS ledger_entries",
}


def _key(table: str) -> dg.AssetKey:
    return dg.AssetKey(table.split("."))


def _table_metadata(table: str) -> dict:
    return {"dagster/table_name": table}


def _unique_check(table: str, columns: str, name: str = "unique_key") -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name, asset=_key(table), blocking=True, description=f"({columns}) is unique, non-null"
    )


def _run_unique_check(con, table: str, columns: str, asset_key: dg.AssetKey) -> dg.AssetCheckResult:
    duplicates = con.execute(
        f"SELECT count(*) FROM (SELECT {columns} FROM {table} GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()[0]
    nulls = con.execute(
        f"SELECT count(*) FROM {table} WHERE "
        + " OR ".join(f"{c.strip()} IS NULL" for c in columns.split(","))
    ).fetchone()[0]
    return dg.AssetCheckResult(
        check_name="unique_key",
        asset_key=asset_key,
        passed=duplicates == 0 and nulls == 0,
        metadata={"duplicate_keys": duplicates, "null_keys": nulls},
    )


def _snapshot_result(
    con, table: RawTable, rows: int, started: float, extra: dict | None = None
) -> dg.MaterializeResult:
    preview = con.execute(f"SELECT {PREVIEW_COLUMNS[table.name]} FROM {table.name} LIMIT 5").df()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "seconds": round(time.monotonic() - started, 2),
            # Masked as well: a catalog name (metric, product) is free text too.
            "preview": dg.MetadataValue.md(redact(preview.to_markdown(index=False))),
            **(extra or {}),
        },
        check_results=[_run_unique_check(con, table.name, "id", _key(table.name))],
    )


def fail_fast_on_config(fn):
    """A ConfigError is not transient: fail at once instead of letting the RetryPolicy repeat it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc

    return wrapper


def bound_to_source(fn):
    """Extraction only writes into a file bound to this source (pipeline.bindings): a lost token must not load the
    sandbox tenant into a production file, nor another tenant's data into this one."""

    @functools.wraps(fn)
    def wrapper(context, *args, **kwargs):
        metronome, duckdb = kwargs["metronome"], kwargs["duckdb"]
        with duckdb.connect() as con:
            verify_bindings(con, [metronome.target()], duckdb.resolved_path(), context.log.info)
        return fn(context, *args, **kwargs)

    return wrapper


def _external(decorate):
    """Retried on transient errors, never on configuration errors; runs after the run's targets are checked against
    the file (BINDINGS_KEY)."""
    return lambda fn: decorate(fail_fast_on_config(bound_to_source(fn)))


def _external_asset(**kwargs):
    """An asset that talks to an external system (see `_external`)."""
    return _external(
        dg.asset(retry_policy=EXTERNAL_RETRY, **{**kwargs, "deps": [*kwargs.get("deps", []), BINDINGS_KEY]})
    )


def _snapshot_asset(table: RawTable, description: str, deps: list | None = None):
    return _external_asset(
        key=_key(table.name),
        group_name=GROUP,
        kinds=KINDS,
        pool="duckdb",
        deps=deps or [],
        description=description,
        metadata=_table_metadata(table.name),
        check_specs=[_unique_check(table.name, "id")],
    )


@_snapshot_asset(
    CUSTOMERS, "Metronome customers (accounts), active and archived, with ingest aliases and custom fields."
)
def metronome_customers(
    context: dg.AssetExecutionContext, metronome: MetronomeResource, duckdb: DuckDBWarehouse
) -> dg.MaterializeResult:
    started = time.monotonic()
    records = extract.fetch_customers(metronome.connection().client)
    with duckdb.connect() as con:
        create_raw_tables(con)
        rows = extract.replace_snapshot(con, CUSTOMERS, records, datetime.now(UTC))
        archived = con.execute(f"SELECT count(*) FROM {CUSTOMERS.name} WHERE is_archived").fetchone()[0]
        return _snapshot_result(
            con, CUSTOMERS, rows, started, {"archived": archived, "active": rows - archived}
        )


@_snapshot_asset(BILLABLE_METRICS, "Billable metrics (including archived): what usage is measured in.")
def metronome_billable_metrics(
    context: dg.AssetExecutionContext, metronome: MetronomeResource, duckdb: DuckDBWarehouse
) -> dg.MaterializeResult:
    started = time.monotonic()
    records = extract.fetch_billable_metrics(metronome.connection().client)
    with duckdb.connect() as con:
        create_raw_tables(con)
        rows = extract.replace_snapshot(con, BILLABLE_METRICS, records, datetime.now(UTC))
        return _snapshot_result(con, BILLABLE_METRICS, rows, started)


def _per_customer(
    context: dg.AssetExecutionContext,
    metronome: MetronomeResource,
    duckdb: DuckDBWarehouse,
    kind: str,
    table: RawTable,
) -> dg.MaterializeResult:
    started = time.monotonic()
    connection = metronome.connection()
    with duckdb.connect() as con:
        create_raw_tables(con)
        customer_ids = [r[0] for r in con.execute(f"SELECT id FROM {CUSTOMERS.name} ORDER BY id").fetchall()]
    context.log.info(
        f"{kind}: fetching for {len(customer_ids)} customers, {connection.concurrency} at a time"
    )
    records, stats = extract.fetch_per_customer(
        connection.client, kind, customer_ids, connection.concurrency, context.log.info
    )
    if stats.missing_customers:
        context.log.warning(
            f"{kind}: {len(stats.missing_customers)} customer(s) no longer exist in Metronome (404), skipped: "
            f"{', '.join(stats.missing_customers[:5])}"
        )
    with duckdb.connect() as con:
        rows = extract.replace_snapshot(con, table, records, datetime.now(UTC))
        return _snapshot_result(
            con,
            table,
            rows,
            started,
            {"customers": len(customer_ids), "customers_missing": len(stats.missing_customers)},
        )


@_snapshot_asset(CONTRACTS, "Contracts (v2, edits applied): term, renewal transitions, rate card, commits, credits.",
                 deps=[metronome_customers])  # fmt: skip
def metronome_contracts(
    context: dg.AssetExecutionContext, metronome: MetronomeResource, duckdb: DuckDBWarehouse
) -> dg.MaterializeResult:
    return _per_customer(context, metronome, duckdb, "contracts", CONTRACTS)


@_snapshot_asset(INVOICES, "Invoices with status, totals, billing period and the billing provider's payment status.",
                 deps=[metronome_customers])  # fmt: skip
def metronome_invoices(
    context: dg.AssetExecutionContext, metronome: MetronomeResource, duckdb: DuckDBWarehouse
) -> dg.MaterializeResult:
    return _per_customer(context, metronome, duckdb, "invoices", INVOICES)


@_snapshot_asset(BALANCES, "Commits and credits: access schedule segments, current balance and ledger entries.",
                 deps=[metronome_customers])  # fmt: skip
def metronome_balances(
    context: dg.AssetExecutionContext, metronome: MetronomeResource, duckdb: DuckDBWarehouse
) -> dg.MaterializeResult:
    return _per_customer(context, metronome, duckdb, "balances", BALANCES)


class UsageConfig(dg.Config):
    """Run config for usage extraction; unset values come from the RETENTION_* env vars."""

    lookback_days: int | None = None
    history_days: int | None = None


def _usage(
    context: dg.AssetExecutionContext,
    config: UsageConfig,
    metronome: MetronomeResource,
    duckdb: DuckDBWarehouse,
    window_size: str,
    history_var: str,
) -> dg.MaterializeResult:
    lookback = positive_int("RETENTION_USAGE_LOOKBACK_DAYS", config.lookback_days, minimum=0, maximum=34)
    history = positive_int(history_var, config.history_days, maximum=3650)
    with duckdb.connect() as con:
        create_raw_tables(con)
        has_rows = con.execute(
            f"SELECT count(*) > 0 FROM (SELECT 1 FROM {USAGE_TABLE} WHERE window_size = ? LIMIT 1)",
            [window_size],
        ).fetchone()[0]
    time_window = context.partition_time_window
    window = extract.UsageWindow.for_partition(
        window_size, time_window.start, time_window.end, lookback, None if has_rows else history
    )
    context.log.info(
        f"usage {window_size}: partitions {time_window.start:%Y-%m-%d %H:%M}..{time_window.end:%Y-%m-%d %H:%M}, "
        f"requesting {window.request_start:%Y-%m-%d}..{window.request_end:%Y-%m-%d}"
        + ("" if has_rows else f" (first run: backfilling {history} days)")
    )
    connection = metronome.connection()
    stats = extract.extract_usage(
        connection.client,
        duckdb.connect,
        window,
        USAGE_CHUNK_DAYS[window_size],
        context.log.info,
        concurrency=min(connection.concurrency, USAGE_CHUNK_CONCURRENCY),
    )
    with duckdb.connect() as con:
        check = _run_unique_check(
            con,
            USAGE_TABLE,
            "customer_id, billable_metric_id, window_size, start_timestamp",
            context.asset_key,
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stats.rows_written,
            "rows_fetched": stats.rows_fetched,
            "requests": stats.requests,
            "pages": stats.pages,
            "seconds": round(stats.seconds, 2),
            "replaced_from": window.request_start.isoformat(),
            "replaced_until": window.keep_end.isoformat(),
            "backfilled_history": not has_rows,
        },
        check_results=[check],
    )


def _usage_asset(name: str, window_size: str, description: str):
    """A usage asset of one cadence that extracts a whole partition range in one step (one request window)."""
    key = dg.AssetKey(["raw", name])
    return _external(
        partitioned_asset(
            key=key,
            cadence="daily" if window_size == "DAY" else "hourly",
            deps=[BINDINGS_KEY],
            group_name=GROUP,
            kinds=KINDS,
            pool="duckdb",
            retry_policy=EXTERNAL_RETRY,
            description=description,
            metadata={**_table_metadata(USAGE_TABLE), "window_size": window_size},
            check_specs=[
                dg.AssetCheckSpec(
                    "unique_key",
                    asset=key,
                    blocking=True,
                    description="(customer_id, billable_metric_id, window_size, start_timestamp) is unique",
                )
            ],
        )
    )


@_usage_asset(
    "metronome_usage_daily",
    "DAY",
    "Day-window usage per customer × billable metric in raw.metronome_usage (window_size='DAY'); each partition "
    "re-extracts its day plus the late-data lookback.",
)
def metronome_usage_daily(
    context: dg.AssetExecutionContext,
    config: UsageConfig,
    metronome: MetronomeResource,
    duckdb: DuckDBWarehouse,
) -> dg.MaterializeResult:
    return _usage(context, config, metronome, duckdb, "DAY", "RETENTION_HISTORY_DAYS")


@_usage_asset(
    "metronome_usage_hourly",
    "HOUR",
    "Hour-window usage per customer × billable metric in raw.metronome_usage (window_size='HOUR'); each partition "
    "re-extracts its day so far plus the late-data lookback.",
)
def metronome_usage_hourly(
    context: dg.AssetExecutionContext,
    config: UsageConfig,
    metronome: MetronomeResource,
    duckdb: DuckDBWarehouse,
) -> dg.MaterializeResult:
    return _usage(context, config, metronome, duckdb, "HOUR", "RETENTION_HOURLY_HISTORY_DAYS")


@dg.asset(
    key=dg.AssetKey(["raw", "contacts"]),
    group_name=GROUP,
    kinds={"csv", "duckdb"},
    pool="duckdb",
    deps=[metronome_customers],
    description="People per Metronome customer with normalized email/phone and consent; bad rows are kept with "
    "their issues or listed in raw.contacts_rejected with the reason.",
    metadata=_table_metadata("raw.contacts"),
    check_specs=[dg.AssetCheckSpec("no_rejected_rows", asset=dg.AssetKey(["raw", "contacts"]))],
)
def contacts(
    context: dg.AssetExecutionContext,
    contacts_source: ContactsResource,
    metronome: MetronomeResource,
    duckdb: DuckDBWarehouse,
) -> dg.MaterializeResult:
    path = contacts_source.csv_path()
    region = contacts_source.phone_region()
    malformed: list = []
    if path is not None:
        frame, malformed = read_contacts_csv(path)
        origin = str(path)
    elif metronome.connection().is_sandbox:
        generated = metronome.connection().sandbox.tenant.contacts_frame()
        frame, origin = generated.assign(source_row=range(2, len(generated) + 2)), "sandbox tenant"
    else:
        context.log.warning(
            "RETENTION_CONTACTS_PATH is not set and the source is the real Metronome API: no people are loaded, "
            "so no segment member can be activated. Point RETENTION_CONTACTS_PATH at a CSV."
        )
        frame = empty_contacts_frame()
        origin = "none"
    with duckdb.connect() as con:
        create_raw_tables(con)
        result = load_contacts(con, frame, malformed, region)
    rejected = sum(result.rejected.values())
    if rejected or result.issues:
        context.log.warning(
            f"contacts: {rejected} rejected {result.rejected}; identifier issues {result.issues}"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.accepted,
            "source": origin,
            "rows_in": result.rows_in,
            "rejected": rejected,
            **{f"rejected_{k}": v for k, v in result.rejected.items()},
            **{f"issue_{k}": v for k, v in result.issues.items()},
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="no_rejected_rows",
                passed=rejected == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"rejected": rejected, **result.rejected},
                description="Rows in raw.contacts_rejected need fixing at the source of the CSV.",
            )
        ],
    )


SNAPSHOT_ASSETS = [metronome_customers, metronome_billable_metrics, metronome_contracts, metronome_invoices,
                   metronome_balances, contacts]  # fmt: skip
USAGE_ASSETS = [metronome_usage_daily, metronome_usage_hourly]


def declarations() -> list[Declaration]:
    """What the source stage's assets write, for the catalog (read from the assets: they need no other stage)."""
    return declarations_of([*SNAPSHOT_ASSETS, *USAGE_ASSETS], stage=GROUP)
