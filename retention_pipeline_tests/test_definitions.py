import dagster as dg

from retention_pipeline.definitions import defs
from retention_pipeline.partitions import DAILY, HOURLY

EXPECTED_SOURCE_ASSETS = {
    "raw/metronome_customers", "raw/metronome_billable_metrics", "raw/metronome_contracts", "raw/metronome_invoices",
    "raw/metronome_balances", "raw/metronome_usage_daily", "raw/metronome_usage_hourly", "raw/contacts",
    "staging/stg_usage", "analytics/customer_features_daily", "analytics/customer_features_hourly",
    "segments/members_daily", "segments/members_hourly", "sync/activation_daily", "sync/activation_hourly",
    "segments/segment_daily_stats", "segments/added_revenue", "segments/holdout_lift", "operations/published_copy",
    "analytics/churn_model_weekly", "analytics/churn_scores_daily", "segments/segment_comparison",
}  # fmt: skip


def test_definitions_load_with_every_source_asset_and_job():
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys >= EXPECTED_SOURCE_ASSETS
    assert {"daily_retention", "hourly_retention"} <= {j.name for j in repo.get_all_jobs()}


def test_every_duckdb_writer_is_in_the_duckdb_pool():
    for spec in defs.get_repository_def().asset_graph.asset_nodes:
        assert spec.pools == {"duckdb"}, spec.key


def test_usage_assets_backfill_a_range_in_one_run():
    graph = defs.get_repository_def().asset_graph
    for name in ("metronome_usage_daily", "metronome_usage_hourly"):
        node = graph.get(dg.AssetKey(["raw", name]))
        assert node.backfill_policy == dg.BackfillPolicy.single_run()


def test_each_cadence_job_holds_only_its_own_cadence():
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    for job, cadence in (("daily_retention", "daily"), ("hourly_retention", "hourly")):
        keys = repo.get_job(job).asset_layer.executable_asset_keys
        assert dg.AssetKey(["segments", f"members_{cadence}"]) in keys
        assert {graph.get(k).tags.get("cadence", cadence) for k in keys} == {cadence}, job


def test_cadence_jobs_take_partitions_from_their_assets_and_run_steps_in_process():
    repo = defs.get_repository_def()
    for job, partitions in (("daily_retention", DAILY), ("hourly_retention", HOURLY)):
        assert repo.get_job(job).partitions_def == partitions, job
    # Every step is in the duckdb pool (limit 1), so a process per step would only add a definitions import each.
    assert {job.executor_def.name for job in repo.get_all_jobs()} == {"in_process"}
    assert {s.cron_schedule for s in repo.schedule_defs} == {"10 * * * *", "40 0 * * *", "10 2 * * 0"}
