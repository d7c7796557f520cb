"""The benchmark at a tiny size, so it cannot rot: every stage runs and reports, the pandas reference agrees with
the SQL model, and the sync sends exactly ⌈changes / limit⌉ requests. No timing is asserted."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench import references
from bench.run import STAGES, main


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    out, doc = root / "results.json", root / "performance.md"
    code = main(
        ["--sizes", "60", "--days", "35", "--histories", "10,20,30", "--quick", "--no-drt",
         "--cache-dir", str(root / "cache"), "--out", str(out), "--doc", str(doc)]
    )  # fmt: skip
    return code, json.loads(out.read_text()), doc.read_text()


def test_every_stage_runs_and_is_reported(report):
    code, results, doc = report
    stages = results["sizes"]["60"]
    assert code == 0, {name: r.get("error") for name, r in stages.items() if "error" in r}
    assert set(STAGES) <= set(stages)
    reported = {g["stage"] for g in results["goals"]}
    assert set(STAGES) <= reported
    assert results["machine"]["nproc"] >= 1 and results["command"].startswith("python -m bench.run")
    assert "### Goals" in doc and "60 customers" in doc


def test_ingestion_loads_the_same_rows_as_read_json(report):
    ingestion = report[1]["sizes"]["60"]["ingestion"]
    assert ingestion["same_rows"] and ingestion["rows"] > 0


def test_pandas_features_equal_the_sql_model(report):
    check = report[1]["sizes"]["60"]["features"]["pandas_check"]
    assert check["equal"], check
    assert check["rows_compared"] > 0 and check["columns_compared"] >= 19


def test_sync_sends_ceil_changes_over_limit_requests(report):
    sync = report[1]["sizes"]["60"]["sync"]
    for key in ("initial_sync", "churn_sync"):
        assert sync[key]["changes"] > 0 and sync[key]["non_2xx"] == 0
        assert sync[key]["requests"] == sync[key]["expected_requests"]
        assert all(call["requests"] == call["expected_requests"] for call in sync[key]["calls"])
    assert sync["drt"] == {"status": "skipped", "reason": "--no-drt"}


def test_segments_churn_and_incremental_histories(report):
    stages = report[1]["sizes"]["60"]
    assert stages["segments"]["exits"] > 0 and stages["segments"]["plan_changes"] > 0
    histories = stages["incremental"]["histories"]
    assert list(histories) == ["10d", "20d", "30d"]
    rows = [h["usage_rows_before"] for h in histories.values()]
    assert rows == sorted(rows) and rows[0] < rows[-1]
    assert all(h["rows_extracted"] > 0 for h in histories.values())


def test_webhook_receiver_stores_each_delivery_once(report):
    hooks = report[1]["sizes"]["60"]["webhooks"]
    assert hooks["stored"] == hooks["expected_stored"] == 2 * hooks["one_sender"]["deliveries"] > 0
    assert hooks["replays"]["deliveries"] == hooks["concurrent"]["deliveries"]


def test_the_comparison_catches_a_wrong_number():
    sql = pd.DataFrame(
        {"customer_id": ["a", "b"], "usage_7d": [1.0, 2.0], "as_of": pd.to_datetime(["2026-01-01"] * 2)}
    )
    assert references.compare_features(sql, sql.copy())["equal"]
    wrong = sql.assign(usage_7d=[1.0, 2.5])
    check = references.compare_features(sql, wrong)
    assert not check["equal"] and check["mismatches"] == {"usage_7d": 1}
