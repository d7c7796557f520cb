"""A failing ERROR data test upstream of the features stops activation until it passes or is overridden."""

import dagster as dg
import duckdb

from retention_pipeline.definitions import defs
from retention_pipeline.warehouse import resolve_duckdb_path

DAY = "2026-11-19"


def db(sql, params=None):
    with duckdb.connect(str(resolve_duckdb_path())) as con:
        return con.execute(sql, params or []).fetchall()


def rebuild_from_raw(run_config=None):
    """Everything after extraction: models, segments, syncs, measurement (the raw tables stay as they are)."""
    job = defs.resolve_job_def("daily_retention")
    graph = defs.get_repository_def().asset_graph
    after_raw = (dg.AssetSelection.all() - dg.AssetSelection.groups("source")).resolve(graph)
    keys = list(after_raw & job.asset_layer.executable_asset_keys)
    return job.execute_in_process(partition_key=DAY, asset_selection=keys, run_config=run_config)


def sends(*sandboxes) -> int:
    return sum(1 for s in sandboxes for r in s.requests if r.method != "GET")


def test_negative_usage_blocks_activation_until_the_test_is_overridden(destinations):
    cio, meta, google, tiktok, pinterest, routing = destinations
    everywhere = (cio, meta, google, tiktok, pinterest)
    assert defs.resolve_job_def("daily_retention").execute_in_process(partition_key=DAY).success
    before = sends(*everywhere)
    members = {r[0] for r in db("SELECT member_key FROM sync.destination_state")}
    # Metronome reports negative usage for accounts outside every segment: they would now look like a usage drop.
    db("""UPDATE raw.metronome_usage SET value = -1 - value WHERE window_size = 'DAY'
          AND start_timestamp >= TIMESTAMP '2026-11-13' AND customer_id NOT IN (
              SELECT customer_id FROM segments.members WHERE segment = 'usage_drop_wow')""")

    rebuild_from_raw()

    guard = db("SELECT DISTINCT guard_status, guard_reason FROM segments.partitions "
               "WHERE cadence = 'daily' AND segment <> 'do_not_retarget'")  # fmt: skip
    assert {g for g, _ in guard} == {"blocked"}
    assert all("analytics.customer_features.usage_is_non_negative failed" in r for _, r in guard)
    assert sends(*everywhere) == before  # no destination heard of the new "members"
    assert {r[0] for r in db("SELECT member_key FROM sync.destination_state")} == members
    tests = db("SELECT severity, passed FROM pipeline.data_tests WHERE test = 'usage_is_non_negative'")
    assert tests == [("error", False)]

    # After review, the same override path as the size guard lets the partition through.
    rebuild_from_raw(
        {"ops": {"segments__members_daily": {"config": {"override_guard": ["usage_is_non_negative"]}}}}
    )
    assert {g for (g,) in db("SELECT DISTINCT guard_status FROM segments.partitions WHERE cadence = 'daily' "
                             "AND segment = 'usage_drop_wow'")} == {"overridden"}  # fmt: skip
    assert sends(*everywhere) > before
