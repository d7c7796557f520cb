"""`retention run`: the daily job for the latest complete day and the hourly job for the latest complete hour, on
the embedded sandbox unless credentials are set, then a summary of what landed where."""

from __future__ import annotations

import os
import sys
import time
import warnings
from datetime import UTC, datetime

import dagster as dg
import duckdb

from retention_pipeline.config import ConfigError, env, parse_utc
from retention_pipeline.environment import resolve, verify_bindings
from retention_pipeline.partitions import latest_complete_partition
from retention_pipeline.source.contacts import ContactsResource
from retention_pipeline.source.metronome import MetronomeResource
from retention_pipeline.warehouse import DuckDBWarehouse, resolve_duckdb_path, table_counts

SUMMARY_SCHEMAS = ("raw", "staging", "analytics", "segments", "sync")


def clock() -> datetime:
    """The pipeline's notion of now: RETENTION_SANDBOX_NOW when pinned (sandbox only), else the real time."""
    pinned = env("RETENTION_SANDBOX_NOW")
    if pinned and env("METRONOME_BEARER_TOKEN") is None:
        try:
            return parse_utc(pinned)
        except ValueError as exc:
            raise ConfigError(f"RETENTION_SANDBOX_NOW={pinned!r} is not ISO-8601 ({exc}).") from None
    return datetime.now(UTC)


def preflight() -> str:
    """Resolve every setting the run needs before starting it, so misconfiguration fails in a second, by name."""
    path = resolve_duckdb_path()
    ContactsResource().csv_path()
    ContactsResource().phone_region()
    from retention_pipeline.definitions import SYSTEMS_IN_USE

    targets = resolve(SYSTEMS_IN_USE)  # production: a missing credential fails here, by name
    with DuckDBWarehouse().connect() as con:
        for note in verify_bindings(con, targets, path):
            print(f"retention_pipeline: {note}")
    connection = MetronomeResource().open()
    connection.client.close()
    return connection.mode


# Step events are DEBUG; the pipeline's own progress lines (context.log.info) stay visible.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def run(day: str | None, hour: str | None, skip_hourly: bool) -> int:
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", message=".*varying BackfillPolicies.*")
    from retention_pipeline.definitions import defs

    now = clock()
    day = day or latest_complete_partition("daily", now)
    hour = hour or latest_complete_partition("hourly", now)
    mode = preflight()
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    plan = [("daily_retention", day)] + ([] if skip_hourly else [("hourly_retention", hour)])
    print(f"retention_pipeline: source={mode}, now={now:%Y-%m-%d %H:%M} UTC")
    for job_name, partition in plan:
        started = time.monotonic()
        print(f"→ {job_name} partition {partition} …", flush=True)
        result = defs.resolve_job_def(job_name).execute_in_process(
            partition_key=partition, instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG
        )
        if not result.success:
            for event in result.all_events:
                if event.is_step_failure:
                    print(f"✗ {event.step_key}: {root_cause(event.step_failure_data.error)}", file=sys.stderr)
            print(f"{job_name} failed (run {result.run_id}).", file=sys.stderr)
            return 1
        print(f"✓ {job_name} {partition} in {time.monotonic() - started:.1f}s (run {result.run_id})")
    print_summary()
    return 0


def root_cause(error) -> str:
    """The innermost error message: the user's problem, not Dagster's wrapper around it."""
    if error is None:
        return "failed"
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def print_summary() -> None:
    path = resolve_duckdb_path()
    with duckdb.connect(str(path), read_only=True) as con:
        counts = table_counts(con, SUMMARY_SCHEMAS)
    width = max((len(name) for name, _ in counts), default=10)
    print(f"\nDuckDB file: {path.resolve()}")
    for name, rows in counts:
        print(f"  {name:<{width}}  {rows:>12,}")
    from retention_pipeline.operations.publish import published_path

    print(f"Published read-only copy for analysts: {published_path().resolve()}")
    print(
        "\nNext:\n"
        "  make dev                                   # Dagster UI on http://127.0.0.1:3000 (runs above included)\n"
        '  .venv/bin/python -m retention_pipeline sql "SELECT * FROM raw.metronome_customers LIMIT 5"\n'
        f"  python -c \"import duckdb; print(duckdb.connect('{published_path()}', read_only=True)"
        ".sql('FROM segments.partitions'))\""
    )


def register(sub) -> None:
    parser = sub.add_parser("run", help="materialize the latest complete day and hour, then summarize")
    parser.add_argument("--day", help="daily partition (YYYY-MM-DD); default: latest complete day")
    parser.add_argument("--hour", help="hourly partition (YYYY-MM-DD-HH:00); default: latest complete hour")
    parser.add_argument("--skip-hourly", action="store_true", help="run only the daily job")
    parser.set_defaults(handler=lambda args: run(args.day, args.hour, args.skip_hourly))
