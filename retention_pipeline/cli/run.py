"""`retention run`: the last 30 days of daily segments (only the missing ones), the daily job for the latest complete
day and the hourly job for the latest complete hour, on the embedded sandboxes unless credentials are set; then a
summary of what landed where and every warning of the runs.

History first, so the latest day's entries, exits and size guard compare with the day before it, the
segment-development plots and Added Revenue have a history, and the UI's partition bars are not empty on a fresh
clone. History is computed, never synced: destinations hold one current state, so only the latest partition is sent.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import duckdb
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from retention_pipeline.cadences import cadence as cadence_of
from retention_pipeline.cli import retention_command
from retention_pipeline.config import ConfigError, env, parse_utc, positive_int
from retention_pipeline.environment import BINDINGS_KEY, resolve, verify_bindings
from retention_pipeline.partitions import last_partitions, latest_complete_partition
from retention_pipeline.source.contacts import ContactsResource
from retention_pipeline.source.metronome import MetronomeResource
from retention_pipeline.warehouse import DuckDBWarehouse, resolve_duckdb_path

SEGMENTS_KEY = dg.AssetKey(["segments", "members_daily"])
TRAINING_JOB = "weekly_churn_model"
SCORES_KEY = dg.AssetKey(["analytics", "churn_scores_daily"])
# Step events are DEBUG; the pipeline's own progress lines (context.log.info) stay visible.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def clock() -> datetime:
    """The pipeline's notion of now: RETENTION_SANDBOX_NOW when pinned (sandbox only), else the real time."""
    pinned = env("RETENTION_SANDBOX_NOW")
    if pinned and env("METRONOME_BEARER_TOKEN") is None:
        try:
            return parse_utc(pinned)
        except ValueError as exc:
            raise ConfigError(f"RETENTION_SANDBOX_NOW={pinned!r} is not ISO-8601 ({exc}).") from None
    return datetime.now(UTC)


def preflight(first_run: bool) -> str:
    """Resolve every setting the run needs before starting it, so misconfiguration fails in a second, by name."""
    path = resolve_duckdb_path()
    ContactsResource().csv_path()
    ContactsResource().phone_region()
    from retention_pipeline.definitions import SYSTEMS_IN_USE

    targets = resolve(SYSTEMS_IN_USE)  # production: a missing credential fails here, by name
    with DuckDBWarehouse().connect() as con:
        for note in verify_bindings(con, targets, path, first_run=first_run):
            print(f"retention_pipeline: {note}")
    connection = MetronomeResource().open()
    connection.client.close()
    return connection.mode


@dataclass(frozen=True)
class Step:
    """One run of a job: a partition, or a range of partitions (start..end) over a subset of its assets."""

    job: str
    start: str
    end: str
    what: str = ""
    assets: frozenset[dg.AssetKey] | None = None

    @property
    def label(self) -> str:
        span = self.start if self.start == self.end else f"{self.start}…{self.end}"
        return f"{self.job} {span}" + (f" ({self.what})" if self.what else "")

    def execute(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        job = defs.resolve_job_def(self.job)
        if self.start == self.end:
            return job.execute_in_process(
                partition_key=self.start, instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG,
                asset_selection=sorted(self.assets, key=str) if self.assets else None,
            )  # fmt: skip
        # One run over a partition range: every partitioned asset has BackfillPolicy.single_run() and computes the
        # range oldest → newest in one step; Dagster records one materialization per partition.
        return job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG,
            tags={ASSET_PARTITION_RANGE_START_TAG: self.start, ASSET_PARTITION_RANGE_END_TAG: self.end},
            asset_selection=sorted(self.assets, key=str) if self.assets else None,
        )  # fmt: skip


def missing_daily_partitions(day: str) -> list[str]:
    """The daily partitions before `day` among the last RETENTION_RUN_HISTORY_DAYS that segments.partitions lacks."""
    window = last_partitions("daily", day, positive_int("RETENTION_RUN_HISTORY_DAYS", maximum=400))[:-1]
    with DuckDBWarehouse().connect() as con:
        present = set()
        if con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'segments' AND table_name = 'partitions'"
        ).fetchone()[0]:
            present = {
                key
                for (key,) in con.execute(
                    "SELECT DISTINCT partition_key FROM segments.partitions WHERE cadence = 'daily'"
                ).fetchall()
            }
    return [key for key in window if key not in present]


def training_week(day: str) -> str | None:
    """The weekly partition whose churn model the latest day should be scored with, when none was attempted yet:
    the newest week that ended by the end of `day` (a model never scores a day before its training as_of)."""
    as_of = cadence_of("daily").key_to_as_of(day)
    week = latest_complete_partition("weekly", as_of)
    week_as_of = cadence_of("weekly").key_to_as_of(week).replace(tzinfo=None)
    with DuckDBWarehouse().connect() as con:
        attempted = (
            _has(con, "analytics", "churn_models")
            and con.execute(
                "SELECT count(*) FROM analytics.churn_models WHERE trained_as_of = ?", [week_as_of]
            ).fetchone()[0]
        )
    return None if attempted else week


def plan(defs: dg.Definitions, day: str, hour: str, skip_hourly: bool) -> list[Step]:
    """With history missing: one range run from the oldest missing day through `day` of everything the daily
    segments read (extraction once, staging, features), the daily segments over the days before `day`, then the rest
    of the daily job for `day` alone (its segments, sync, measurement, published copy). The latest day is thus a
    single-partition materialization, compared with the day before it, and the only one whose metadata is plotted
    per partition (Dagster repeats a range step's metadata on every partition of the range). Without missing history:
    the daily job. Then the hourly job."""
    missing = missing_daily_partitions(day)
    week = training_week(day)
    # The weekly churn model trains on what extraction brought in (after the history step when there is one),
    # before the latest day is scored and its segments computed.
    training = [Step(TRAINING_JOB, week, week, "churn model")] if week else []
    steps = []
    if missing:
        job = defs.resolve_job_def("daily_retention")
        in_job = set(job.asset_layer.executable_asset_keys)
        upstream = dg.AssetSelection.assets(SEGMENTS_KEY).upstream().resolve(job.asset_layer.asset_graph)
        # Scores need the model, trained after this step; a model never scores days before it, so history is not
        # scored and the latest day is (with the rest of the daily job).
        inputs = frozenset(upstream & in_job - {SEGMENTS_KEY, SCORES_KEY})
        previous_day = last_partitions("daily", day, 2)[0]
        steps += [
            Step("daily_retention", missing[0], day, "history: extraction, features", inputs),
            *training,
            Step("daily_retention", missing[0], previous_day, "history: segments", frozenset({SEGMENTS_KEY})),
            Step("daily_retention", day, day, "segments, sync, measurement, published copy",
                 frozenset(in_job - inputs | {BINDINGS_KEY})),
        ]  # fmt: skip
    else:
        steps += [*training, Step("daily_retention", day, day)]
    if not skip_hourly:
        steps.append(Step("hourly_retention", hour, hour))
    return steps


def run(day: str | None, hour: str | None, skip_hourly: bool, first_run: bool = False) -> int:
    from retention_pipeline.definitions import defs

    started_at = datetime.now(UTC).replace(tzinfo=None)
    now = clock()
    day = day or latest_complete_partition("daily", now)
    hour = hour or latest_complete_partition("hourly", now)
    mode = preflight(first_run)
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    print(f"retention_pipeline: source={mode}, now={now:%Y-%m-%d %H:%M} UTC")
    run_ids = []
    for step in plan(defs, day, hour, skip_hourly):
        started = time.monotonic()
        print(f"→ {step.label} …", flush=True)
        result = step.execute(defs, instance)
        run_ids.append(result.run_id)
        if not result.success:
            for event in result.all_events:
                if event.is_step_failure:
                    print(f"✗ {event.step_key}: {root_cause(event.step_failure_data.error)}", file=sys.stderr)
            print(f"{step.job} failed (run {result.run_id}).", file=sys.stderr)
            return 1
        print(f"✓ {step.label} in {time.monotonic() - started:.1f}s (run {result.run_id})")
    print_summary(run_ids, started_at, warnings_of(instance, run_ids))
    return 0


def root_cause(error) -> str:
    """The innermost error message: the user's problem, not Dagster's wrapper around it."""
    if error is None:
        return "failed"
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def warnings_of(instance: dg.DagsterInstance, run_ids: list[str]) -> list[str]:
    """Every WARNING (or worse) the runs logged, once each, from Dagster's event log: rejected contacts, size guard,
    failed segments, audience floor, held or rejected syncs are all logged by the step that found them."""
    seen: dict[str, None] = {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id):
            if entry.level >= logging.WARNING and entry.dagster_event is None and entry.user_message:
                seen.setdefault(f"{entry.step_key or 'run'}: {entry.user_message.strip()}")
    return list(seen)


DESTINATIONS_SQL = """
WITH items AS (
    SELECT destination, operation, status FROM sync.ledger_items
    WHERE split_part(sync_id, ':', 1) IN (SELECT unnest($runs::VARCHAR[]))
),
coverage AS (  -- each (segment, destination) as this command's newest sync left it
    SELECT * FROM sync.coverage WHERE computed_at >= $started
    QUALIFY row_number() OVER (PARTITION BY segment, destination ORDER BY as_of DESC, computed_at DESC) = 1
),
destinations AS (SELECT destination FROM items UNION SELECT destination FROM coverage)
SELECT
    d.destination,
    (SELECT count(*) FROM items AS i WHERE i.destination = d.destination AND operation = 'add') AS adds,
    (SELECT count(*) FROM items AS i WHERE i.destination = d.destination AND operation = 'remove') AS removes,
    (SELECT count(*) FROM items AS i WHERE i.destination = d.destination AND operation = 'update') AS updates,
    (SELECT count(*) FROM items AS i WHERE i.destination = d.destination AND status = 'rejected') AS rejected,
    (SELECT count(*) FROM items AS i WHERE i.destination = d.destination AND status NOT IN ('acked', 'rejected'))
        AS unacknowledged,
    (SELECT sum(with_identifier) FROM coverage AS c WHERE c.destination = d.destination) AS with_identifier,
    (SELECT sum(people) FROM coverage AS c WHERE c.destination = d.destination) AS people,
    (SELECT sum(destination_matched) FROM coverage AS c WHERE c.destination = d.destination) AS matched
FROM destinations AS d
ORDER BY d.destination
"""

# Each segment's newest partition in the series of its declared cadence.
SEGMENTS_SQL = """
SELECT p.segment, p.cadence, p.partition_key, p.accounts, p.people, p.entries, p.exits, p.holdout_accounts,
       p.guard_status
FROM segments.partitions AS p JOIN segments.definitions AS d USING (segment, cadence)
QUALIFY row_number() OVER (PARTITION BY p.segment ORDER BY p.as_of DESC) = 1
ORDER BY p.cadence, p.segment
"""


def _has(con, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?", [schema, table]
        ).fetchone()[0]
    )


def _pct(part, whole) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "n/a"


def print_summary(run_ids: list[str], started_at: datetime, warnings: list[str]) -> None:
    path = resolve_duckdb_path()
    with duckdb.connect(str(path), read_only=True) as con:
        destinations = (
            con.execute(DESTINATIONS_SQL, {"runs": run_ids, "started": started_at}).fetchall()
            if _has(con, "sync", "ledger_items") and _has(con, "sync", "coverage")
            else []
        )
        segments = con.execute(SEGMENTS_SQL).fetchall() if _has(con, "segments", "partitions") else []
        model = con.execute(MODEL_SQL).fetchone() if _has(con, "analytics", "churn_models") else None
        history = (
            con.execute(
                "SELECT count(DISTINCT partition_key) FROM segments.partitions WHERE cadence = 'daily'"
            ).fetchone()[0]
            if segments
            else 0
        )
    print("\nDestinations (this run):")
    for name, adds, removes, updates, rejected, pending, identified, people, matched in destinations:
        print(
            f"  {name:<11} +{adds} added  −{removes} removed  ~{updates} updated  {rejected} rejected"
            + (f"  {pending} unacknowledged" if pending else "")
            + f"  coverage {_pct(identified or 0, people)} ({identified or 0}/{people or 0} people with a usable "
            "identifier)" + (f", matched {matched}" if matched is not None else "")
        )
    if not destinations:
        print("  (no sync ran)")
    print(f"\nSegments (latest partition; {history} daily partitions computed):")
    width = max((len(s[0]) for s in segments), default=10)
    for segment, cadence, key, accounts, people, entries, exits, holdout, guard in segments:
        print(
            f"  {segment:<{width}}  {cadence:<6} {key:<16}  {accounts:>5} accounts {people:>5} people  "
            f"+{entries} entered −{exits} exited  holdout {holdout}"
            + ("" if guard == "ok" else f"  [{guard}]")
        )
    print_model(model)
    print(f"\nWarnings ({len(warnings)}):" if warnings else "\nWarnings: none")
    for warning in warnings:
        print(f"  ! {warning}")
    from retention_pipeline.operations.publish import published_path

    print(f"\nDuckDB file: {path.resolve()}")
    print(f"Published read-only copy for analysts: {published_path().resolve()}")
    retention = retention_command()
    example = segments[0][0] if segments else "<segment>"
    print(
        "\nNext:\n"
        "  make dev      # the Dagster UI on http://127.0.0.1:3000 (these runs included)\n"
        f'  {retention} sql "FROM segments.segment_daily_stats ORDER BY day DESC, segment LIMIT 20"\n'
        f"  {retention} preview {example}      # who is in a segment and why"
    )


MODEL_SQL = """
SELECT model_version, trained_as_of, status, message, rows_labelled, positives_labelled,
       metrics->>'roc_auc', baseline->>'roc_auc', metrics->>'pr_auc', baseline->>'pr_auc', baseline->>'rule',
       (SELECT count(*) FROM analytics.churn_scores AS s WHERE s.model_version = m.model_version)
FROM analytics.churn_models AS m ORDER BY trained_as_of DESC, trained_at DESC LIMIT 1
"""


def print_model(row: tuple | None) -> None:
    """The newest churn model attempt (a MODEL_SQL row): what it learned from and how it did against the best rule."""
    print("\nChurn model:")
    if row is None:
        print("  (not trained yet: the weekly_churn_model job trains it)")
        return
    version, as_of, status, message, rows, positives, auc, base_auc, pr, base_pr, rule, scored = row
    if status != "trained":
        print(f"  no model as of {as_of:%Y-%m-%d}: {message}")
        return
    print(
        f"  {version} (trained on {rows} rows, {positives} churned, data before {as_of:%Y-%m-%d}); backtest ROC AUC "
        f"{float(auc):.3f} vs {float(base_auc):.3f}, PR AUC {float(pr):.3f} vs {float(base_pr):.3f} for the best "
        f"single rule ({rule}); {scored} scores written"
    )


def register(sub) -> None:
    parser = sub.add_parser(
        "run",
        help="compute the last RETENTION_RUN_HISTORY_DAYS (30) daily partitions (only the missing ones), sync "
        "the latest complete day and hour, then summarize",
    )
    parser.add_argument("--day", help="daily partition (YYYY-MM-DD); default: latest complete day")
    parser.add_argument("--hour", help="hourly partition (YYYY-MM-DD-HH:00); default: latest complete hour")
    parser.add_argument("--skip-hourly", action="store_true", help="run only the daily job")
    parser.add_argument(
        "--first-run",
        action="store_true",
        help="this is the first run of a new DuckDB file with real destination credentials: send every member "
        "(without it such a run stops, in case RETENTION_DUCKDB_PATH is mistyped)",
    )
    parser.set_defaults(handler=lambda args: run(args.day, args.hour, args.skip_hourly, args.first_run))
