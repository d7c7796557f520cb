"""`make run`'s code path end to end, shared by every test here (one fresh `retention run` and a second one): the
embedded sandboxes, 30 days of daily segments computed but only the latest partition synced, a summary per
destination and per segment, no Python warnings, and the partitions visible in the UI over GraphQL."""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest

from retention_pipeline.cli import main

NOW = "2026-11-20T10:30:00Z"
DAY, HOUR = "2026-11-19", "2026-11-20-09:00"
DAILY_SEGMENT = "usage_drop_wow"


@dataclass
class Runs:
    home: Path
    database: Path  # a copy of the fresh run's files, after the second run
    first_database: Path  # the fresh run's own file
    first: str  # printed by the fresh run
    second: str  # printed by a daily-only run right after it
    python_warnings: list[str]
    partitions_after_first: list[tuple]


@pytest.fixture(scope="module")
def runs(sandbox_run, tmp_path_factory) -> Runs:
    """The session's fresh `retention run` (conftest.sandbox_run), then a second, daily-only run on a copy."""
    root = tmp_path_factory.mktemp("make_run")
    env = sandbox_run.copy_to(root)
    database = Path(env["RETENTION_DUCKDB_PATH"])
    with duckdb.connect(str(database), read_only=True) as con:
        partitions = con.execute(
            "SELECT segment, partition_key, computed_at FROM segments.partitions WHERE cadence = 'daily' "
            "AND partition_key < ? ORDER BY ALL",
            [DAY],
        ).fetchall()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        second = io.StringIO()
        with contextlib.redirect_stdout(second):
            code = main(["run", "--skip-hourly"])
        assert code == 0, second.getvalue()
    return Runs(
        Path(env["DAGSTER_HOME"]), database, sandbox_run.database, sandbox_run.stdout, second.getvalue(),
        re.findall(r"^.*\w+Warning: .*$", sandbox_run.stderr, flags=re.MULTILINE), partitions,
    )  # fmt: skip


@contextlib.contextmanager
def dagster_instance(runs: Runs):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(runs.home))
        with dg.DagsterInstance.get() as instance:
            yield instance


def query(runs: Runs, sql: str, params=None) -> list[tuple]:
    with duckdb.connect(str(runs.database), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_a_fresh_run_fills_every_raw_table_and_names_the_file(runs):
    assert f"daily_retention {DAY}" in runs.first and f"hourly_retention {HOUR}" in runs.first
    assert str(runs.first_database.resolve()) in runs.first
    for table in ["metronome_customers", "metronome_billable_metrics", "metronome_contracts",
                  "metronome_invoices", "metronome_balances", "contacts"]:  # fmt: skip
        assert query(runs, f"SELECT count(*) FROM raw.{table}")[0][0] > 0, table
    windows = dict(query(runs, "SELECT window_size, count(*) FROM raw.metronome_usage GROUP BY 1"))
    assert windows["DAY"] > 0 and windows["HOUR"] > 0


def test_a_fresh_run_computes_30_daily_partitions_of_segments_and_their_stats(runs):
    assert "history" in runs.first
    keys = [k for (k,) in query(
        runs, "SELECT partition_key FROM segments.partitions WHERE segment = ? AND cadence = 'daily' ORDER BY 1",
        [DAILY_SEGMENT],
    )]  # fmt: skip
    assert len(keys) >= 30 and keys[-1] == DAY and keys[-30] == "2026-10-21"
    features = query(
        runs, "SELECT count(DISTINCT as_of) FROM analytics.customer_features WHERE cadence = 'daily'"
    )
    assert features[0][0] >= 30
    days = query(runs, "SELECT count(*) FROM segments.segment_daily_stats WHERE segment = ?", [DAILY_SEGMENT])
    assert days[0][0] >= 30
    # Each partition compares with the day before it: the latest has a previous partition, so its entries are
    # not "everyone" and its guard compared sizes.
    previous, entries, accounts = query(
        runs,
        "SELECT previous_as_of, entries, accounts FROM segments.partitions WHERE segment = ? AND partition_key = ? "
        "AND cadence = 'daily'",
        [DAILY_SEGMENT, DAY],
    )[0]
    assert str(previous).startswith(DAY) and (entries < accounts or accounts == 0)
    # Dagster recorded one materialization per partition (the UI's partition bar), not one per run.
    with dagster_instance(runs) as instance:
        materialized = instance.get_materialized_partitions(dg.AssetKey(["segments", "members_daily"]))
    assert len(materialized) >= 30 and DAY in materialized


def test_only_the_latest_partition_of_each_cadence_is_synced(runs):
    assert {k for (k,) in query(runs, "SELECT DISTINCT partition_key FROM sync.ledger")} == {DAY, HOUR}
    assert {k for (k,) in query(runs, "SELECT DISTINCT partition_key FROM sync.runs")} == {DAY, HOUR}
    assert query(runs, "SELECT count(*) FROM sync.destination_state")[0][0] > 0
    with dagster_instance(runs) as instance:
        synced = instance.get_materialized_partitions(dg.AssetKey(["sync", "activation_daily"]))
    assert synced == {DAY}


def test_every_destination_is_synced_into_objects_the_sync_created(runs):
    """Every registered destination acknowledged people on the embedded sandboxes, into objects the sync created
    through each API (the in-process sandboxes start empty; Google's user lists come from destinations.yaml)."""
    acknowledged = dict(query(runs, "SELECT destination, count(*) FROM sync.destination_state GROUP BY 1"))
    assert set(acknowledged) == {"customerio", "meta", "google", "tiktok", "pinterest"}
    assert all(count > 0 for count in acknowledged.values())
    created = query(
        runs, "SELECT DISTINCT destination, origin FROM sync.destination_objects WHERE kind = 'audience'"
    )
    assert set(created) == {(d, "sandbox") for d in ("customerio", "meta", "tiktok", "pinterest")}


def test_the_summary_counts_per_destination_and_per_segment(runs):
    lines = runs.first.splitlines()
    destinations = {
        line.split()[0]: line
        for line in lines
        if re.match(r"\s+(customerio|meta|google|tiktok|pinterest)\s+\+", line)
    }
    assert set(destinations) == {"customerio", "meta", "google", "tiktok", "pinterest"}
    for line in destinations.values():
        assert re.search(r"\+\d+ added\s+−\d+ removed\s+~\d+ updated\s+\d+ rejected\s+coverage \d+%", line), (
            line
        )
    # What was sent matches the run's ledger (the first run adds everyone it can reach).
    adds = dict(
        query(runs, "SELECT destination, count(*) FROM sync.ledger_items WHERE operation = 'add' GROUP BY 1")
    )
    for name, line in destinations.items():
        assert f"+{adds[name]} added" in line
    segment = next(line for line in lines if line.strip().startswith(DAILY_SEGMENT))
    accounts, people, entries, exits, holdout = query(
        runs,
        "SELECT accounts, people, entries, exits, holdout_accounts FROM segments.partitions "
        "WHERE segment = ? AND partition_key = ? AND cadence = 'daily'",
        [DAILY_SEGMENT, DAY],
    )[0]
    assert re.search(
        rf"{accounts} accounts\s+{people} people\s+\+{entries} entered −{exits} exited\s+holdout {holdout}",
        segment,
    ), segment
    # The sandbox tenant ships two contacts of unknown customers: the warning is part of the summary.
    warnings_block = runs.first.split("\nWarnings", 1)[1]
    assert "raw__contacts: contacts: 2 rejected" in warnings_block


def test_the_hints_work_as_printed(runs):
    hints = [h.split("  #")[0].strip() for h in runs.first.split("\nNext:\n", 1)[1].splitlines()]
    assert hints[0] == "make dev"
    env = {**os.environ, "RETENTION_DUCKDB_PATH": str(runs.database)}
    for hint in hints[1:]:
        command, _, rest = hint.partition(" sql " if " sql " in hint else " preview ")
        assert "python" not in command and command.endswith("retention"), (
            hint
        )  # the console script, not `python`
        argv = [command, "sql", rest.strip('"')] if " sql " in hint else [command, "preview", rest]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (hint, done.stderr[-2000:])
        assert DAILY_SEGMENT in done.stdout or rest in done.stdout, hint


def test_a_second_run_does_not_redo_the_history_and_sends_nothing_new(runs):
    assert "(history:" not in runs.second and f"daily_retention {DAY}" in runs.second
    assert "weekly_churn_model" not in runs.second  # the week's churn model was attempted by the first run
    after = query(
        runs,
        "SELECT segment, partition_key, computed_at FROM segments.partitions WHERE cadence = 'daily' "
        "AND partition_key < ? ORDER BY ALL",
        [DAY],
    )
    assert after == runs.partitions_after_first  # untouched, not recomputed
    for line in runs.second.split("\nDestinations (this run):\n", 1)[1].split("\n\n", 1)[0].splitlines():
        assert re.search(r"\+0 added\s+−0 removed\s+~0 updated\s+0 rejected", line), line


def test_the_run_emits_no_python_warnings(runs):
    """Nothing from the pipeline's definitions or steps (BetaWarning, "varying BackfillPolicies", deprecations):
    the fresh run ran with `python -W always`, so any warning would be on its stderr."""
    assert runs.python_warnings == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PARTITIONS_QUERY = """
{
  assetNodes(assetKeys: [{path: ["segments", "members_daily"]}, {path: ["sync", "activation_daily"]}]) {
    assetKey { path }
    partitionStats { numMaterialized numPartitions numFailed }
  }
}
"""


def test_the_ui_shows_30_materialized_daily_partitions_of_segments(runs):
    """What the asset page's partition bar shows, asked of the webserver over GraphQL on loopback."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETENTION_", "DAGSTER_"))}
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-m", "retention_pipeline.definitions", "-h", "127.0.0.1",
         "-p", str(port)],
        env={**env, "DAGSTER_HOME": str(runs.home)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline, stats = time.monotonic() + 120, None
        while time.monotonic() < deadline and stats is None:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/graphql", json={"query": PARTITIONS_QUERY}, timeout=10
                )
                nodes = response.json()["data"]["assetNodes"]
                stats = {"/".join(n["assetKey"]["path"]): n["partitionStats"] for n in nodes} or None
            except (httpx.HTTPError, KeyError, TypeError, ValueError):
                time.sleep(0.5)
        assert stats is not None, "webserver did not answer GraphQL in time"
        assert stats["segments/members_daily"]["numMaterialized"] >= 30
        assert stats["segments/members_daily"]["numFailed"] == 0
        assert stats["sync/activation_daily"]["numMaterialized"] == 1  # history is never synced
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_only_single_partition_steps_carry_per_segment_numbers(runs):
    """Dagster repeats a range step's metadata on every partition of the range, so the history step records a table
    instead of numbers; the latest day, a step of its own, carries the values the UI plots."""
    key = dg.AssetKey(["segments", "members_daily"])
    with dagster_instance(runs) as instance:

        def metadata(partition: str) -> dict:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
            ).records
            return records[0].asset_materialization.metadata

        latest, older = metadata(DAY), metadata("2026-11-01")
    accounts = query(
        runs,
        "SELECT accounts FROM segments.partitions WHERE segment = ? AND partition_key = ? AND cadence = 'daily'",
        [DAILY_SEGMENT, DAY],
    )[0][0]
    assert latest[f"{DAILY_SEGMENT}/accounts"].value == accounts
    assert f"{DAILY_SEGMENT}/accounts" not in older and older["partitions_in_step"].value == 29
    assert "2026-11-01" in older["history"].value
