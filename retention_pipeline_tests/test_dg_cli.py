"""The `dg` CLI on this project from the repo root, as `make test`/`make dev` and the README run it: the project
loads (`dg check defs`), lists its jobs and assets (`dg list defs`), runs a partition (`dg launch`), and prints no
warning on the way. Each command runs with a temp DAGSTER_HOME holding the repo's dagster_instance.yaml (telemetry off) and
VIRTUAL_ENV set to the project's venv, as the Makefile exports it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from retention_pipeline.config import SETTINGS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin/, where `dg` and `retention` are installed
# A Python warning (`UserWarning: …`, `BetaWarning: …`, the `warnings.warn(` source line) or a `dg` warning (each
# ends with "To suppress this warning, add …"). The pipeline's own WARNING log lines are not warnings of this kind.
PYTHON_OR_DG_WARNING = re.compile(
    r"\w+Warning: |warnings\.warn\(|suppress this warning|active virtual environment"
)


def dg_env(tmp: Path, **extra: str) -> dict[str, str]:
    home = tmp / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copyfile(REPO / "dagster_instance.yaml", home / "dagster.yaml")
    # Nothing of the caller's pipeline settings, and no PYTHONWARNINGS that could hide a warning.
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS and k != "PYTHONWARNINGS"}
    return {**env, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": sys.prefix, **extra}


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def warnings_in(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line for line in (result.stdout + result.stderr).splitlines() if PYTHON_OR_DG_WARNING.search(line)
    ]


# Loading the definitions with every warning shown, deprecations included (Python hides those outside __main__,
# and pytest's filterwarnings ignores them): what a future Dagster will break on.
LOAD_DEFINITIONS = (
    "from retention_pipeline.definitions import defs\n"
    "repo = defs.get_repository_def()\n"
    "repo.get_all_jobs(), repo.schedule_defs, repo.sensor_defs"
)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """`dg check defs`, `dg list defs --json` and a plain definitions load, run once for the module (~10 s each)."""
    env = dg_env(tmp_path_factory.mktemp("dg"))
    return {
        "dg check defs": run([str(BIN / "dg"), "check", "defs"], env),
        "dg list defs": run([str(BIN / "dg"), "list", "defs", "--json"], env),
        "python -W always": run([sys.executable, "-W", "always", "-c", LOAD_DEFINITIONS], env),
    }


def test_dg_check_defs_loads_the_project_from_the_repo_root(loaded):
    result = loaded["dg check defs"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully." in result.stdout


def test_dg_list_defs_lists_both_cadence_jobs_and_the_segment_assets(loaded):
    result = loaded["dg list defs"]
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert {"daily_retention", "hourly_retention"} <= {job["name"] for job in listed["jobs"]}
    assets = {asset["asset_key"] for asset in listed["assets"]}
    assert {"segments/members_daily", "segments/members_hourly", "raw/metronome_usage_daily"} <= assets
    assert {"daily_retention_schedule", "hourly_retention_schedule"} <= {
        s["name"] for s in listed["schedules"]
    }


def test_loading_the_definitions_prints_no_warnings(loaded):
    for command, result in loaded.items():
        assert result.returncode == 0, f"{command}: {result.stderr[-2000:]}"
        assert warnings_in(result) == [], f"{command}:\n" + "\n".join(warnings_in(result))


def test_retention_console_script_exits_with_mains_code(tmp_path):
    env = dg_env(tmp_path)
    helped = run([str(BIN / "retention"), "--help"], env)
    assert helped.returncode == 0 and "usage: retention" in helped.stdout
    assert warnings_in(helped) == []
    # main() returns 2 on a configuration error, before any run starts; the script must exit with it.
    failed = run([str(BIN / "retention"), "run"], {**env, "RETENTION_SANDBOX_NOW": "not-a-date"})
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "RETENTION_SANDBOX_NOW" in failed.stderr


def test_dg_launch_runs_a_daily_partition_in_process_on_the_instance(tmp_path):
    env = dg_env(
        tmp_path,
        RETENTION_DUCKDB_PATH=str(tmp_path / "retention.duckdb"),
        RETENTION_EXPORT_DIR=str(tmp_path / "exports"),
        RETENTION_WEBHOOK_INBOX=str(tmp_path / "inbox.sqlite3"),
        RETENTION_SANDBOX_NOW="2026-11-20T10:30:00Z",
        RETENTION_SANDBOX_CUSTOMERS="40",
        RETENTION_HISTORY_DAYS="30",
        RETENTION_HOURLY_HISTORY_DAYS="2",
    )
    result = run(
        [str(BIN / "dg"), "launch", "--job", "daily_retention", "--partition", "2026-11-19"], env, 280
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Executing steps in process" in output  # one process, as `make run` runs it
    assert warnings_in(result) == []

    with duckdb.connect(str(tmp_path / "retention.duckdb"), read_only=True) as con:
        segments = con.execute(
            "SELECT count(*) FROM segments.partitions WHERE cadence = 'daily' AND partition_key = '2026-11-19'"
        ).fetchone()[0]
    assert segments > 0
    # The run is recorded in the DAGSTER_HOME it was given, so `dg dev` on that home shows it.
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
    assert [(r.job_name, r.tags.get("dagster/partition"), r.status) for r in runs] == [
        ("daily_retention", "2026-11-19", dg.DagsterRunStatus.SUCCESS)
    ]
