"""The generated part of docs/performance.md: machine, exact command, goals and per-stage details.

Only the text between the two markers is replaced, so the hand-written findings around it survive every run."""

from __future__ import annotations

from pathlib import Path

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _met(value) -> str:
    return {True: "✅ met", False: "❌ missed", None: "—"}[value]


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return lines


def _mem(result: dict, name: str = "pipeline"):
    """Peak RSS of `name` run alone in a fresh process (the stage's memory probe)."""
    return result.get("memory", {}).get(name, {}).get("peak_rss_mib")


def _details(size: str, stages: dict) -> list[str]:
    rows = []
    ing = stages.get("ingestion", {})
    if "pipeline" in ing:
        rows.append(["ingestion", f"pipeline: extract_usage over {ing['pages']} recorded pages ({ing['rows']:,} rows)",
                     ing["pipeline"]["seconds"], _mem(ing), f"{ing['pipeline']['rows_per_s']:,} rows/s"])  # fmt: skip
        rows.append(["ingestion", "reference: DuckDB read_json of the same page files", ing["read_json"]["seconds"],
                     _mem(ing, "read_json"), f"{ing['read_json']['rows_per_s']:,} rows/s"])  # fmt: skip
    feat = stages.get("features", {})
    if "customer_features" in feat:
        rows.append(["features", "pipeline: build_model(analytics.customer_features), daily", feat["customer_features"]["seconds"],
                     None, f"{feat['customers']:,} customers, {feat['usage_rows']:,} usage rows"])  # fmt: skip
        rows.append(["features", "pipeline: features from raw = the staging tables it reads ("
                     + ", ".join(t.split(".")[1] for t in feat["upstream_models"]) + ") + customer_features",
                     feat["features_from_raw"]["seconds"], _mem(feat), ""])  # fmt: skip
        rows.append(["features", "reference: one DuckDB aggregate over raw.metronome_usage", feat["duckdb_aggregate"]["seconds"],
                     _mem(feat, "duckdb_aggregate"), f"customer_features ÷ aggregate = {_fmt(feat['ratio_vs_aggregate'])}"])  # fmt: skip
        check = feat["pandas_check"]
        rows.append(["features", "reference: pandas implementation (bench/references.py)", feat["pandas"]["seconds"],
                     _mem(feat, "pandas"),
                     f"pandas ÷ features from raw = {_fmt(feat['pandas_slower_by_from_raw'])} (÷ customer_features "
                     f"alone {_fmt(feat['pandas_slower_by'])}); same numbers: {_fmt(check['equal'])} "
                     f"({check['rows_compared']:,} rows × {check['columns_compared']} columns); "
                     f"reading its input from DuckDB (not timed): {_fmt(feat['pandas_input_fetch']['seconds'])} s"])  # fmt: skip
        rows.append(["features", "info: every model of a daily run, in build order",
                     feat["all_models"]["seconds"], None,
                     ", ".join(f"{t.split('.')[1]} {_fmt(v)}" for t, v in feat["all_models_by_table"].items())])  # fmt: skip
        proposal = feat.get("proposed_staging", {})
        if proposal.get("applies"):
            rows.append(["features", "what-if: the two balance staging models as the project builds them",
                         proposal["project_sql_seconds"], _mem(feat, "staging_project_sql"), ""])  # fmt: skip
            rows.append(["features", "what-if: the same two models with the SQL proposed below (bench/proposals.py)",
                         proposal["proposed_sql_seconds"], _mem(feat, "staging_proposed_sql"),
                         f"{_fmt(proposal['speedup'])}× faster, same rows: {_fmt(proposal['same_rows'])}; features "
                         f"from raw would take {_fmt(proposal['features_from_raw_seconds_with_proposal'])} s, pandas "
                         f"÷ that = {_fmt(proposal['pandas_slower_by_with_proposal'])}"])  # fmt: skip
    seg = stages.get("segments", {})
    if "segments_and_plan" in seg:
        plan = ", ".join(
            f"{d}: " + " ".join(f"{op} {n:,}" for op, n in ops.items()) for d, ops in seg["plan"].items()
        )
        rows.append(["segments", f"pipeline: compute_partition (hourly + daily) + compute_plan, {seg['exit_pct']}% of "
                     f"{seg['member_accounts_before']:,} member accounts leave", seg["segments_and_plan"]["seconds"],
                     _mem(seg), f"plan: {plan}"])  # fmt: skip
        rows.append(["segments", "yardstick: one DuckDB aggregate (same process)", seg["duckdb_aggregate"]["seconds"],
                     None, f"ratio {_fmt(seg['ratio_vs_aggregate'])}"])  # fmt: skip
    sync = stages.get("sync", {})
    if "churn_sync" in sync:
        for label, key in (("initial full sync", "initial_sync"), ("churn sync", "churn_sync")):
            r = sync[key]
            per = "; ".join(f"{d} {v['changes']:,} changes / {v['requests']} req (expected {v['expected_requests']})"
                            for d, v in r["by_destination"].items())  # fmt: skip
            rows.append(["sync", f"pipeline: run_sync, {label}, loopback sandboxes", r["seconds"],
                         _mem(sync) if key == "churn_sync" else None,
                         f"{r['changes_per_s']:,} changes/s end to end, {r['changes_per_s_sending']:,}/s while sending "
                         f"({_fmt(r['send_seconds'])} s); {per}"])  # fmt: skip
        drt = sync.get("drt", {})
        if drt.get("status") == "ok":
            rows.append(["sync", f"reference: {drt['version']} pushing the same rows (`drt run`, {drt['syncs']} syncs)",
                         drt["seconds"], None,
                         f"its own total {_fmt(drt.get('internal_seconds'))} s, {_fmt(drt.get('changes_per_s'))} "
                         "changes/s; requests "
                         + ", ".join(f"{d} {n}" for d, n in drt["requests"].items())
                         + f"; non-2xx {drt['non_2xx']}"])  # fmt: skip
        else:
            rows.append(
                ["sync", "reference: drt-core", None, None, f"{drt.get('status')}: {drt.get('reason', '')}"]
            )
    inc = stages.get("incremental", {})
    if "histories" in inc:
        for name, r in inc["histories"].items():
            steps = ", ".join(f"{k} {_fmt(v)}" for k, v in r["steps"].items())
            rows.append(["incremental", f"daily run for {inc['day']} on {name} of history ({r['usage_rows_before']:,} rows)",
                         r["seconds"], _mem(inc) if name == list(inc["histories"])[-1] else None, steps])  # fmt: skip
    hooks = stages.get("webhooks", {})
    if "one_sender" in hooks:
        for name, label in (("one_sender", "distinct deliveries, 1 sender"),
                            ("concurrent", "distinct deliveries, concurrent senders"),
                            ("replays", "replays of those (answered 'duplicate'), concurrent senders")):  # fmt: skip
            r = hooks[name]
            rows.append(["webhooks", f"receiver on loopback: {r['deliveries']:,} {label} ({r['senders']})", None, None,
                         f"p50 {_fmt(r['p50_ms'])} ms, p99 {_fmt(r['p99_ms'])} ms, max {_fmt(r['max_ms'])} ms; "
                         f"{_fmt(r['per_s'])} deliveries/s"])  # fmt: skip
        rows.append(["webhooks", "inbox rows after all deliveries", None, None,
                     f"{hooks['stored']:,} (expected {hooks['expected_stored']:,}: each id once)"])  # fmt: skip
    train = stages.get("training", {})
    if "phases" in train:
        ph = train["phases"]
        rows.append(["training", f"pipeline: train_week for the week ending {train['week_as_of'][:10]} "
                     f"({train['history_days']} days of history), whole step", train["seconds"], _mem(train),
                     f"{train['status']}: {train['days_evaluated']} days evaluated, {train['labelled_days']} labelled, "
                     f"{train['rows_labelled']:,} rows ({train['positives_labelled']:,} churned), "
                     f"{train['candidate_features']} candidate features ({train['features_used']} used)"])  # fmt: skip
        rows.append(["training", "phase: training set (the feature SQL once per t, then labels and join)",
                     ph["training_set"], None,
                     f"features {_fmt(ph['of_which_features'])} s ({_fmt(train['features_per_day_seconds'])} s per t), "
                     f"labels and join {_fmt(ph['of_which_labels_and_join'])} s; "
                     f"÷ ({train['days_evaluated']} × daily customer_features build "
                     f"{_fmt(train['customer_features']['seconds'])} s) = {_fmt(train['training_set_vs_features'])}"])  # fmt: skip
        rows.append(["training", "phase: training set copied to analytics.churn_training_set, fetched to pandas",
                     ph["fetch_and_copy"], None, ""])  # fmt: skip
        rows.append(["training", "phase: backtest (split, cap, fit on older days, predict newest, best rule)",
                     ph["backtest"], None,
                     f"fit {_fmt(ph['of_which_backtest_fit'])} s on {train['rows_train']:,} rows; test "
                     f"{train['rows_test']:,} rows ({train['positives_test']:,} churned)"])  # fmt: skip
        rows.append(["training", "phase: final fit (3 calibration folds)", ph["final_fit"], None,
                     f"{_fmt(train['rows_final'])} rows after the cap of {train['settings']['max_training_rows']:,} "
                     f"({'capped' if train['capped'] else 'not capped'}); {train['calibration_method']} calibration"])  # fmt: skip
        if train["roc_auc"] is not None:
            base = train["baseline"]
            rows.append(["training", "info: backtest (newest 14 labelled days)", None, None,
                         f"ROC AUC {train['roc_auc']:.3f} vs {base['roc_auc']:.3f}, PR AUC {train['pr_auc']:.3f} vs "
                         f"{base['pr_auc']:.3f}, Brier {train['brier']:.4f} vs {base['brier']:.4f} (model vs "
                         f"`{base['rule']}`); gap {train['backtest']['gap_days']} days"])  # fmt: skip
        else:
            rows.append(["training", "info: no model", None, None, train["message"].replace("|", "\\|")])
    score = stages.get("scoring", {})
    if "scoring" in score:
        ph = score["phases"]
        tiers = ", ".join(f"{t} {n:,}" for t, n in score["tiers"].items())
        rows.append(["scoring", f"pipeline: score_partition for {score['as_of'][:10]}", score["scoring"]["seconds"],
                     _mem(score),
                     f"{score['scored']:,} active customers scored, {_fmt(score['rows_per_s'])} rows/s; {tiers}; "
                     f"load model {_fmt(ph['load_model'])} s, active customers {_fmt(ph['active_customers'])} s, top "
                     f"features by occlusion ({score['model_features']} + 1 predicts) {_fmt(ph['contributions'])} s"
                     if score["scored"] else f"nothing scored: {score['why_not_scored']}"])  # fmt: skip
        rows.append(["scoring", "reference: the daily customer_features build it reads",
                     score["customer_features"]["seconds"], None,
                     f"scoring ÷ features = {_fmt(score['ratio_vs_features'])}"])  # fmt: skip
    for stage, result in stages.items():
        if "error" in result:
            last = result["error"].strip().splitlines()[-1]
            rows.append([stage, "**failed**", None, None, last.replace("|", "\\|")])
    return [
        f"#### {int(size):,} customers",
        "",
        *_table(["stage", "what", "median s", "peak RSS MiB", "notes"], rows),
        "",
    ]


def _relative(path: Path) -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def render(report: dict, results_path: Path) -> str:
    m = report["machine"]
    lines = [
        START,
        "",
        f"## Latest results ({report['date']})",
        "",
        f"Generated by `{report['command']}` (started {report['started_at']}, finished {report['finished_at']}); "
        f"raw numbers in `{_relative(results_path)}`. "
        "Times are medians of "
        f"{report['config']['reps']} interleaved repetition(s) in one process per stage; peak RSS is the kernel's "
        "high-water mark of a fresh process running only that step (interpreter and imports included).",
        "",
        *_table(
            ["machine", ""],
            [
                ["cores (`nproc`)", m["nproc"]],
                ["CPU", m["cpu"]],
                ["memory", f"{m['memory_gib']} GiB"],
                ["OS", m["os"]],
                [
                    "Python / DuckDB / pandas / pyarrow",
                    f"{m['python']} / {m['duckdb']} / {m['pandas']} / {m['pyarrow']}",
                ],
                ["load average at start → end", f"{m.get('load_average')} → {m.get('load_average_at_end')}"],
                [
                    "code measured",
                    f"commit {report.get('code', {}).get('commit', '?')}"
                    + (
                        f", with uncommitted changes to {', '.join(report['code']['uncommitted'])}"
                        if report.get("code", {}).get("uncommitted")
                        else ""
                    ),
                ],
            ],
        ),
        "",
        "### Goals",
        "",
        *_table(
            ["stage", "metric", "customers", "value (wall time)", "same on CPU time", "goal", "met?"],
            [
                [
                    g["stage"],
                    g["metric"],
                    g["size"],
                    g["value"],
                    g.get("cpu_value"),
                    g["goal"],
                    _met(g["met"]),
                ]
                for g in report["goals"]
            ],
        ),
        "",
        "Goals are judged on wall-time medians; the CPU-time column is the same ratio on the process's CPU time "
        "(all its threads), which other work on a shared machine does not inflate.",
        "",
        "### Details",
        "",
    ]
    for size, stages in report["sizes"].items():
        lines += _details(size, stages)
    lines.append(END)
    return "\n".join(lines)


TEMPLATE = """# Performance

How fast the pipeline is against what a user would otherwise use, measured with `make bench`
(`python -m bench.run`). Everything is a ratio against a reference measured side by side in the same run.

{results}
"""


def update_doc(path: Path, report: dict, results_path: Path) -> None:
    generated = render(report, results_path)
    if path.exists() and START in (text := path.read_text()) and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        path.write_text(before + generated + after)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.format(results=generated))
