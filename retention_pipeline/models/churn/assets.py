"""The churn model as Dagster assets: `analytics/churn_model_weekly` trains (or says why not) once per weekly
partition, `analytics/churn_scores_daily` scores each daily partition with the newest model trained by then.

Both are in the models stage and the `duckdb` pool; their tables are declared in retention_pipeline.models.churn,
so segments that read analytics.churn_scores depend on the scoring asset through the catalog.
"""

import time

import dagster as dg

from retention_pipeline import catalog
from retention_pipeline.models.assets import GROUP, model_key
from retention_pipeline.models.assets import declarations as model_declarations
from retention_pipeline.models.churn import FEATURES_TABLE, LABEL_SQL, declarations
from retention_pipeline.models.churn.scoring import ScoreSummary, Tiers, score_partition
from retention_pipeline.models.churn.training import INSUFFICIENT, Outcome, Settings, train_week
from retention_pipeline.models.project import table_refs
from retention_pipeline.partitions import partitioned_asset, partitions_of_run
from retention_pipeline.warehouse import DuckDBWarehouse

TRAINING, SCORING = declarations()
KINDS = {"duckdb", "scikitlearn"}


def _features_model():
    return next(m for m in catalog.models() if m.table == FEATURES_TABLE)


def _label_reads() -> set[str]:
    """The tables churn_label.sql reads (its points are a temp table)."""
    return {t for t in table_refs(LABEL_SQL.read_text(), LABEL_SQL, frozenset({"churn_points"})) if "." in t}


def _writers(tables: set[str]) -> list[dg.AssetKey]:
    """The assets writing `tables` (the daily one of a partitioned model), from the catalog's declarations."""
    declared = [*catalog.upstream_of("models").declarations, *model_declarations(catalog.models())]
    keys = {d.key for d in declared if set(d.tables) & tables and d.cadence in (None, "daily")}
    return sorted(keys, key=lambda k: k.to_user_string())


# A day is scored by the newest model trained as of its end or before: the week that ends by the day's as_of. Shifting
# the day back 6 days (offsets count downstream, i.e. daily, partitions) lands in exactly that week: a Saturday maps to
# its own week (both end at the same instant), Sunday … Friday to the week before. A later retrain is never upstream
# of an earlier day, and days before the first week map to no week.
WEEK_ENDED_BY_AS_OF = dg.TimeWindowPartitionMapping(start_offset=-6, end_offset=-6)


def _outcome_metadata(outcome: Outcome) -> dict:
    start, end = outcome.window
    metadata = {
        "status": outcome.status,
        "model_version": outcome.model_version,
        "message": outcome.message,
        "trained_as_of": outcome.trained_as_of.isoformat(),
        "training_window": f"{start:%Y-%m-%d} … {end:%Y-%m-%d}" if start and end else "empty",
        "labelled_days": outcome.labelled_days,
        "rows": outcome.rows_final or outcome.rows_labelled,
        "positives": outcome.positives_labelled,
    }
    if outcome.status == INSUFFICIENT:
        return metadata
    model, baseline = outcome.metrics, outcome.baseline
    calibration = outcome.calibration.pivot(index="decile", columns="scorer")
    rows = "\n".join(
        f"| {decile} | {int(r[('n', 'model')])} | {r[('mean_predicted', 'model')]:.3f} | "
        f"{r[('observed_rate', 'model')]:.3f} | {r[('mean_predicted', 'baseline')]:.3f} | "
        f"{r[('observed_rate', 'baseline')]:.3f} |"
        for decile, r in calibration.iterrows()
    )
    backtest = model["backtest"]
    return metadata | {
        "roc_auc": model["roc_auc"],
        "pr_auc": model["pr_auc"],
        "brier": model["brier"],
        "baseline_rule": baseline["rule"],
        "baseline_roc_auc": baseline["roc_auc"],
        "baseline_pr_auc": baseline["pr_auc"],
        "baseline_brier": baseline["brier"],
        "test_rows": outcome.rows_test,
        "test_positives": outcome.positives_test,
        "train_rows": outcome.rows_train,
        "backtest": f"train t {backtest['train_days'][0]} … {backtest['train_days'][1]}, gap "
        f"{backtest['gap_days']} d, test t {backtest['test_days'][0]} … {backtest['test_days'][1]}",
        "calibration_method": outcome.calibration_method,
        "fit_seconds": round(outcome.fit_seconds or 0, 3),
        "features": ", ".join(outcome.features),
        "calibration": dg.MetadataValue.md(
            "Backtest test rows by decile of predicted p (1 = lowest).\n\n"
            "| decile | n | model mean p | model observed | baseline mean p | baseline observed |\n"
            "|---|---|---|---|---|---|\n" + rows
        ),
    }


@partitioned_asset(
    key=TRAINING.key,
    cadence="weekly",
    deps=_writers(_features_model().refs | _label_reads()),
    description="Churn-risk model trained as of the week's end: point-in-time training set, calibrated gradient "
    "boosting, backtest vs the best single-rule baseline (analytics.churn_models, churn_calibration, "
    "churn_training_set); too little history stores an insufficient_data row instead of a model.",
    metadata=TRAINING.metadata,
    kinds=KINDS,
    group_name=GROUP,
    pool="duckdb",
)
def churn_model_weekly(context: dg.AssetExecutionContext, duckdb: DuckDBWarehouse) -> dg.MaterializeResult:
    """Trains each week of the step oldest → newest; each attempt is stored whatever its status."""
    started = time.monotonic()
    settings = Settings.from_env()
    partitions = partitions_of_run(context, "weekly")
    outcomes = []
    for number, (partition_key, as_of) in enumerate(partitions, start=1):
        context.log.info(f"churn model {partition_key}: as of {as_of:%Y-%m-%d} ({number}/{len(partitions)})")
        with duckdb.connect() as con:
            outcome = train_week(con, as_of, settings, context.log.info)
        if outcome.status == INSUFFICIENT:
            context.log.warning(f"churn model {partition_key}: no model ({outcome.message})")
        else:
            context.log.info(f"churn model {partition_key}: {outcome.model_version} {outcome.message}")
        outcomes.append(outcome)
    metadata = _outcome_metadata(outcomes[-1])
    if len(outcomes) > 1:
        # Dagster repeats a range step's metadata on every partition of it (dagster-io/dagster#18123): the newest
        # week's numbers would be plotted for every week, so a range reports a per-week table instead.
        metadata = {k: v for k, v in metadata.items() if not isinstance(v, float | int)}
        metadata["partitions_in_step"] = len(outcomes)
        metadata["history"] = dg.MetadataValue.md(
            "| trained_as_of | status | model_version | ROC AUC | baseline ROC AUC |\n|---|---|---|---|---|\n"
            + "\n".join(
                f"| {o.trained_as_of:%Y-%m-%d} | {o.status} | {o.model_version} | "
                f"{o.metrics.get('roc_auc', float('nan')):.3f} | {o.baseline.get('roc_auc', float('nan')):.3f} |"
                for o in outcomes
            )
        )
    return dg.MaterializeResult(metadata=metadata | {"seconds": round(time.monotonic() - started, 3)})


def _scores_metadata(summaries: list[ScoreSummary]) -> dict:
    newest = summaries[-1]
    metadata: dict = {"as_of": newest.as_of.isoformat(), "scored": newest.scored}
    if newest.reason:
        metadata["why_not_scored"] = newest.reason
    else:
        metadata |= {"model_version": newest.model_version, "mean_p_churn_30d": newest.mean_p or 0.0}
        metadata |= {f"tier_{tier}": count for tier, count in newest.tiers.items()}
    if len(summaries) > 1:
        # Dagster repeats a range step's metadata on every partition of it: a per-day table instead of plots.
        metadata = {"partitions_in_step": len(summaries), "as_of": newest.as_of.isoformat()}
        metadata["history"] = dg.MetadataValue.md(
            "| as_of | scored | model_version | high | medium | low |\n|---|---|---|---|---|---|\n"
            + "\n".join(
                f"| {s.as_of:%Y-%m-%d} | {s.scored} | {s.model_version or '–'} | {s.tiers.get('high', 0)} | "
                f"{s.tiers.get('medium', 0)} | {s.tiers.get('low', 0)} |"
                for s in summaries
            )
        )
    return metadata


@partitioned_asset(
    key=SCORING.key,
    cadence="daily",
    deps=[
        dg.AssetDep(model_key(_features_model(), "daily")),
        dg.AssetDep(TRAINING.key, partition_mapping=WEEK_ENDED_BY_AS_OF),
        *_writers(_label_reads()),
    ],
    description="Calibrated 30-day churn probability of every customer active at the day's end, its risk tier, "
    "expected revenue at risk and top contributing features (analytics.churn_scores), by the newest model "
    "trained at or before that day; empty (with a warning) while there is none.",
    metadata=SCORING.metadata,
    kinds=KINDS,
    group_name=GROUP,
    pool="duckdb",
)
def churn_scores_daily(context: dg.AssetExecutionContext, duckdb: DuckDBWarehouse) -> dg.MaterializeResult:
    """Scores each day of the step oldest → newest, one transaction per day."""
    started = time.monotonic()
    tiers = Tiers.from_env()
    partitions = partitions_of_run(context, "daily")
    summaries, models = [], {}
    with duckdb.connect() as con:
        for number, (partition_key, as_of) in enumerate(partitions, start=1):
            if len(partitions) > 1:
                context.log.info(f"churn scores {partition_key} ({number}/{len(partitions)})")
            summaries.append(score_partition(con, as_of, tiers, models, context.log.warning))
    unscored = [s for s in summaries if s.reason]
    if unscored:
        days = f"{unscored[0].as_of:%Y-%m-%d}" + (
            f" … {unscored[-1].as_of:%Y-%m-%d}" if len(unscored) > 1 else ""
        )
        context.log.warning(
            f"churn scores: {len(unscored)} day(s) not scored ({days}): {unscored[-1].reason}"
        )
    return dg.MaterializeResult(
        metadata=_scores_metadata(summaries) | {"seconds": round(time.monotonic() - started, 3)}
    )


defs = dg.Definitions(assets=[churn_model_weekly, churn_scores_daily])
