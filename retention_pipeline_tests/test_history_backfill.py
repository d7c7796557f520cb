"""Partition ranges: which daily partitions `retention run` counts back, and how one step over a range reports."""

import subprocess
import sys

import dagster as dg

from retention_pipeline.models.assets import merge_check_results
from retention_pipeline.partitions import last_partitions


def test_the_last_partitions_are_counted_back_from_the_latest_not_from_the_wall_clock():
    keys = last_partitions("daily", "2026-11-19", 30)
    assert (keys[0], keys[-1], len(keys)) == ("2026-10-21", "2026-11-19", 30)
    assert last_partitions("daily", "2099-01-02", 2) == ["2099-01-01", "2099-01-02"]  # a clock pinned ahead
    assert last_partitions("daily", "2026-01-02", 30) == [
        "2026-01-01",
        "2026-01-02",
    ]  # the start of partitions
    assert last_partitions("hourly", "2026-11-20-00:00", 2) == ["2026-11-19-23:00", "2026-11-20-00:00"]


def _result(passed: bool, failing: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name="unique", asset_key=dg.AssetKey("m"), passed=passed,
        metadata={"failing_rows": failing, **({"sample": dg.MetadataValue.md("| x |")} if failing else {})},
    )  # fmt: skip


def test_a_check_over_a_range_passes_only_if_every_partition_passed_and_names_the_failing_ones():
    (merged,) = merge_check_results(
        [
            ("2026-11-01", [_result(True, 0)]),
            ("2026-11-02", [_result(False, 3)]),
            ("2026-11-03", [_result(True, 0)]),
        ]
    )
    assert not merged.passed
    assert merged.metadata["failing_rows"].value == 3 and merged.metadata["partitions"].value == 3
    assert merged.metadata["failing_partitions"].value == "2026-11-02"
    single = [_result(True, 0)]
    assert merge_check_results([("2026-11-03", single)]) == single  # a scheduled run reports as before


def test_definitions_load_and_resolve_their_jobs_without_any_warning():
    """No BetaWarning (backfill_policy is given through multi_asset) and no "varying BackfillPolicies" (every
    partitioned asset of a job is single_run)."""
    code = (
        "from retention_pipeline.definitions import defs\n"
        "for job in ('daily_retention', 'hourly_retention'): defs.resolve_job_def(job)\n"
        "defs.get_repository_def().get_all_jobs()\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
