"""The benchmark at a tiny size, so it cannot rot: every stage runs and reports, the pandas reference agrees with
the SQL model, the sync sends exactly ⌈changes / limit⌉ requests, and the churn model trains on a short history and
scores with what it trained. No timing is asserted."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench import references
from bench.run import STAGES, evaluate, main


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    out, doc = root / "results.json", root / "performance.md"
    # 80 days of churn history: the shortest that leaves the 28 labelled days training needs by default.
    code = main(
        ["--sizes", "60", "--days", "35", "--histories", "10,20,30", "--churn-days", "80", "--quick", "--no-drt",
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


def test_churn_training_reports_its_rows_phases_and_memory(report):
    results, doc = report[1], report[2]
    training = results["sizes"]["60"]["training"]
    assert training["status"] == "trained", training["message"]
    assert training["history_days"] == 80 and 0 < training["labelled_days"] <= training["days_evaluated"]
    assert 0 < training["positives_labelled"] < training["rows_labelled"]
    assert training["rows_final"] == min(training["rows_labelled"], training["settings"]["max_training_rows"])
    assert training["rows_train"] + training["rows_test"] <= training["rows_labelled"]
    assert 0 < training["features_used"] <= training["candidate_features"]
    phases = training["phases"]
    assert 0 < phases["of_which_features"] < phases["training_set"] < training["seconds"]
    assert phases["final_fit"] > 0 and 0 < phases["of_which_backtest_fit"] < phases["backtest"]
    assert 0 <= training["roc_auc"] <= 1 and 0 <= training["baseline"]["roc_auc"] <= 1
    assert training["baseline"]["rule"] and training["training_set_vs_features"] > 0
    assert (
        training["memory"]["pipeline"]["peak_rss_mib"] > training["memory"]["pipeline"]["rss_before_mib"] > 0
    )
    metrics = {g["metric"] for g in results["goals"] if g["stage"] == "training"}
    assert {"weekly training step, whole (minutes)", "peak RSS of the pipeline step alone (MiB)"} <= metrics
    assert "train_week for the week ending" in doc and "phase: final fit" in doc


def test_churn_scoring_scores_active_customers_with_the_trained_model(report):
    stages = report[1]["sizes"]["60"]
    scoring = stages["scoring"]
    assert (
        scoring["model_version"] == stages["training"]["model_version"] and scoring["why_not_scored"] is None
    )
    assert 0 < scoring["scored"] <= 60 and sum(scoring["tiers"].values()) == scoring["scored"]
    assert (
        scoring["rows_per_s"] > 0 and 0 < scoring["phases"]["contributions"] < scoring["scoring"]["seconds"]
    )
    assert scoring["memory"]["pipeline"]["peak_rss_mib"] > 0


def test_scoring_linearity_goal_compares_each_size_with_the_next_smaller():
    def sizes(*rates):
        return {str(n): {"scoring": {"scored": n, "rows_per_s": r, "why_not_scored": None}}
                for n, r in zip((100_000, 1_000, 10_000), rates, strict=True)}  # fmt: skip

    rows = [g for g in evaluate(sizes(5_000, 1_000, 4_000)) if "linear" in g["metric"]]
    assert [(g["size"], g["value"], g["met"]) for g in rows] == [(10_000, 4.0, True), (100_000, 1.25, True)]
    dropped = [g for g in evaluate(sizes(2_000, 1_000, 4_000)) if "linear" in g["metric"]]
    assert [(g["size"], g["met"]) for g in dropped] == [(10_000, True), (100_000, False)]


def test_the_comparison_catches_a_wrong_number():
    sql = pd.DataFrame(
        {"customer_id": ["a", "b"], "usage_7d": [1.0, 2.0], "as_of": pd.to_datetime(["2026-01-01"] * 2)}
    )
    assert references.compare_features(sql, sql.copy())["equal"]
    wrong = sql.assign(usage_7d=[1.0, 2.5])
    check = references.compare_features(sql, wrong)
    assert not check["equal"] and check["mismatches"] == {"usage_7d": 1}
