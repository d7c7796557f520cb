"""Turns the models of dbt_like_sql/ into Dagster assets: one per model (one per cadence when partitioned).

Lineage comes from the SQL's own table references; a table no model writes maps to the asset that writes it through
the catalog (retention_pipeline/catalog.py), which `declarations` tells what the models write. Data tests run right
after the model is built and are returned as asset checks; `unique`/`not_null` checks are blocking, so a broken key
stops everything downstream in the run. Every outcome is also kept in `pipeline.data_tests`, where the segments
stage finds failing ERROR tests and blocks activation.
"""

import time
from datetime import datetime

import dagster as dg
import duckdb

from retention_pipeline.catalog import WRITES as WRITES  # re-exported for its earlier importers
from retention_pipeline.catalog import Declaration
from retention_pipeline.catalog import table_producers as table_producers  # re-exported likewise
from retention_pipeline.config import env, positive_int
from retention_pipeline.models import quality
from retention_pipeline.models.project import THIS, Model
from retention_pipeline.partitions import partitioned_asset, partitions_of_run
from retention_pipeline.redact import redact
from retention_pipeline.warehouse import DuckDBWarehouse, transaction

GROUP = "models"


def model_key(model: Model, cadence: str | None = None) -> dg.AssetKey:
    return dg.AssetKey([model.schema, f"{model.name}_{cadence}" if cadence else model.name])


def declarations(models: list[Model], stage: str = GROUP) -> list[Declaration]:
    """What the models' assets write: one declaration per model (per cadence when partitioned)."""
    return [
        Declaration(model_key(model, cadence), (model.table,), stage, cadence)
        for model in models
        for cadence in model.cadences or (None,)
    ]


def set_run_variables(con: duckdb.DuckDBPyConnection, cadence: str | None, as_of: datetime | None) -> None:
    """The variables model SQL may read with getvariable(): as_of, cadence, activity_metric, attribution_days,
    lift_window_days."""
    con.execute("SET VARIABLE as_of = ?::TIMESTAMP", [as_of.replace(tzinfo=None) if as_of else None])
    con.execute("SET VARIABLE cadence = ?::VARCHAR", [cadence])
    con.execute("SET VARIABLE activity_metric = ?::VARCHAR", [env("RETENTION_ACTIVITY_METRIC")])
    con.execute(
        "SET VARIABLE attribution_days = ?::INTEGER",
        [positive_int("RETENTION_ATTRIBUTION_DAYS", minimum=0, maximum=365)],
    )
    con.execute(
        "SET VARIABLE lift_window_days = ?::INTEGER",
        [positive_int("RETENTION_LIFT_WINDOW_DAYS", maximum=365)],
    )


def build_model(con: duckdb.DuckDBPyConnection, model: Model, evolve: bool = True) -> int | None:
    """Create or replace the model's table/view; a partitioned model replaces only its (cadence, as_of) rows.

    `evolve=False` skips creating the table and matching its columns to the SQL (done for the first partition of a
    range already). Returns the rows written, or None for a view (counting would evaluate it over all history on
    every run)."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {model.schema}")
    if model.materialized == "view":
        con.execute(f"CREATE OR REPLACE VIEW {model.table} AS {model.sql}")
        return None
    if not model.partitioned:
        con.execute(f"CREATE OR REPLACE TABLE {model.table} AS {model.sql}")
        return con.execute(f"SELECT count(*) FROM {model.table}").fetchone()[0]
    if evolve:
        con.execute(f"CREATE TABLE IF NOT EXISTS {model.table} AS SELECT * FROM ({model.sql}) LIMIT 0")
        evolve_columns(con, model)
    with transaction(con):
        con.execute(
            f"DELETE FROM {model.table} WHERE cadence = getvariable('cadence') AND as_of = getvariable('as_of')"
        )
        rows = con.execute(f"INSERT INTO {model.table} BY NAME {model.sql}").fetchone()[0]
    return rows


def evolve_columns(con: duckdb.DuckDBPyConnection, model: Model) -> None:
    """Keep a partitioned table's columns in step with its SQL: new columns are added (NULL in partitions built
    before), dropped ones removed; a changed type is an error naming the model and column."""
    wanted = {name: dtype for name, dtype, *_ in con.execute(f"DESCRIBE ({model.sql})").fetchall()}
    have = {name: dtype for name, dtype, *_ in con.execute(f"DESCRIBE {model.table}").fetchall()}
    for name, dtype in wanted.items():
        if name not in have:
            con.execute(f'ALTER TABLE {model.table} ADD COLUMN "{name}" {dtype}')
        elif have[name] != dtype:
            raise ValueError(
                f"{model.table}: column {name} changed type {have[name]} → {dtype}; drop the table (or the "
                "column) to rebuild it, then re-run the partitions you need"
            )
    for name in have.keys() - wanted.keys():
        con.execute(f'ALTER TABLE {model.table} DROP COLUMN "{name}"')


def scope_sql(model: Model) -> str:
    """What `{{ this }}` means in a test: the table, or just the partition being built."""
    if model.partitioned:
        return (
            f"(SELECT * FROM {model.table} WHERE cadence = getvariable('cadence') "
            "AND as_of = getvariable('as_of'))"
        )
    return model.table


def run_tests(con: duckdb.DuckDBPyConnection, model: Model, key: dg.AssetKey) -> list[dg.AssetCheckResult]:
    results = []
    for test in model.tests:
        sql = THIS.sub(scope_sql(model), test.sql)
        failing = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
        sample = con.execute(f"SELECT * FROM ({sql}) LIMIT 5").df() if failing else None
        results.append(
            dg.AssetCheckResult(
                check_name=test.name,
                asset_key=key,
                passed=failing == 0,
                severity=dg.AssetCheckSeverity.ERROR
                if test.severity == "error"
                else dg.AssetCheckSeverity.WARN,
                metadata={
                    "failing_rows": failing,
                    # Failing rows may hold contact data (aliases, custom fields): never raw email/phone in the event log.
                    **(
                        {"sample": dg.MetadataValue.md(redact(sample.to_markdown(index=False)))}
                        if failing
                        else {}
                    ),
                },
            )
        )
    return results


def run_metrics(con: duckdb.DuckDBPyConnection, model: Model) -> dict[str, float]:
    """The model's `metrics` query (one row) as numeric metadata; NULLs are reported as 0."""
    if not model.metrics_sql:
        return {}
    result = con.execute(THIS.sub(scope_sql(model), model.metrics_sql))
    row = result.fetchone()
    names = [d[0] for d in result.description]
    return {name: float(value or 0) for name, value in zip(names, row or [], strict=False)}


def run_show(con: duckdb.DuckDBPyConnection, model: Model) -> dict:
    """The model's `show` query as a markdown table (first 50 rows): small results an operator reads in the UI."""
    if not model.show_sql:
        return {}
    frame = con.execute(f"SELECT * FROM ({THIS.sub(scope_sql(model), model.show_sql)}) LIMIT 50").df()
    if frame.empty:
        return {"table": dg.MetadataValue.md("(no rows yet)")}
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)

    def cell(value) -> str:
        if value is None or value != value:  # None or NaN
            return ""
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    rows = "\n".join("| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False))
    return {"table": dg.MetadataValue.md(f"{header}\n{rows}")}


def _column_schema(con: duckdb.DuckDBPyConnection, model: Model) -> dg.TableSchema:
    described = con.execute(f"DESCRIBE {model.table}").fetchall()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, str(dtype), description=model.columns.get(name))
            for name, dtype, *_ in described
        ]
    )


def _static_metadata(model: Model) -> dict:
    metadata = {
        "dagster/table_name": model.table,
        "sql": dg.MetadataValue.md(f"```sql\n{model.sql}\n```"),
        "path": dg.MetadataValue.path(str(model.path)),
        "materialized": model.materialized,
    }
    if model.columns:
        metadata["dagster/column_schema"] = dg.TableSchema(
            columns=[dg.TableColumn(name, "?", description=text) for name, text in model.columns.items()]
        )
    return metadata


def _check_specs(model: Model, key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            test.name,
            asset=key,
            blocking=test.blocking,
            description=f"{test.kind} test, severity {test.severity}"
            + (": a failure blocks activation" if test.severity == "error" else ""),
        )
        for test in model.tests
    ]


def merge_check_results(
    per_partition: list[tuple[str, list[dg.AssetCheckResult]]],
) -> list[dg.AssetCheckResult]:
    """One result per test for a step that built several partitions: passed only if it passed in every partition;
    the failing rows are summed and the failing partitions named (the sample is the newest failing one's)."""
    if len(per_partition) == 1:
        return per_partition[0][1]
    merged = []
    for position, newest in enumerate(per_partition[-1][1]):
        outcomes = [(key, results[position]) for key, results in per_partition]
        failing = [(key, r) for key, r in outcomes if not r.passed]
        merged.append(
            dg.AssetCheckResult(
                check_name=newest.check_name,
                asset_key=newest.asset_key,
                passed=not failing,
                severity=newest.severity,
                metadata={
                    "failing_rows": sum(int(r.metadata["failing_rows"].value) for _, r in outcomes),
                    "partitions": len(outcomes),
                    **({"failing_partitions": ", ".join(key for key, _ in failing)} if failing else {}),
                    **({"sample": failing[-1][1].metadata["sample"]} if failing else {}),
                },
            )
        )
    return merged


def _model_asset(
    model: Model, cadence: str | None, deps: list[dg.AssetKey], group: str
) -> dg.AssetsDefinition:
    key = model_key(model, cadence)
    description = model.description or f"SQL model {model.table}."
    if not cadence:

        @dg.asset(
            key=key,
            deps=deps,
            group_name=group,
            kinds={"duckdb", "sql"},
            pool="duckdb",
            description=description,
            metadata=_static_metadata(model),
            check_specs=_check_specs(model, key),
        )
        def _table(context: dg.AssetExecutionContext, duckdb: DuckDBWarehouse) -> dg.MaterializeResult:
            started = time.monotonic()
            with duckdb.connect() as con:
                set_run_variables(con, None, None)
                rows, checks = _build_and_test(con, model, key, None, None, context.run.run_id)
                schema = _column_schema(con, model)
                metrics = run_metrics(con, model)
                shown = run_show(con, model)
            return dg.MaterializeResult(
                metadata={
                    **({"dagster/row_count": rows} if rows is not None else {}),
                    "dagster/column_schema": schema,
                    "seconds": round(time.monotonic() - started, 3),
                    **metrics,
                    **shown,
                },
                check_results=checks,
            )

        return _table

    @partitioned_asset(
        key=key,
        cadence=cadence,
        deps=deps,
        group_name=group,
        kinds={"duckdb", "sql"},
        pool="duckdb",
        description=description + f" ({cadence} partitions: rows for as_of = the partition end.)",
        metadata=_static_metadata(model),
        check_specs=_check_specs(model, key),
    )
    def _partitioned(context: dg.AssetExecutionContext, duckdb: DuckDBWarehouse) -> dg.MaterializeResult:
        """Builds every partition of the step oldest → newest, each as of its own end; a range is one transaction
        per partition, so an interrupted backfill keeps the partitions it finished."""
        started = time.monotonic()
        partitions = partitions_of_run(context, cadence)
        per_partition, rows = [], None
        with duckdb.connect() as con:
            for number, (partition_key, as_of) in enumerate(partitions, start=1):
                if len(partitions) > 1:
                    context.log.info(f"{model.name} {partition_key} ({number}/{len(partitions)})")
                set_run_variables(con, cadence, as_of)
                rows, checks = _build_and_test(
                    con, model, key, cadence, as_of, context.run.run_id, evolve=number == 1
                )
                per_partition.append((partition_key, checks))
            schema = _column_schema(con, model)
            metrics = run_metrics(con, model)  # the newest partition's (the session variables point at it)
        newest_as_of = partitions[-1][1]
        # Row count and metrics describe one partition: Dagster would repeat them on every partition of a range
        # (dagster-io/dagster#18123), so a range step reports its size instead.
        sizes = (
            {**({"dagster/row_count": rows} if rows is not None else {}), **metrics}
            if len(partitions) == 1
            else {"partitions_in_step": len(partitions)}
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/column_schema": schema,
                "seconds": round(time.monotonic() - started, 3),
                "as_of": newest_as_of.isoformat(),
                **sizes,
            },
            check_results=merge_check_results(per_partition),
        )

    return _partitioned


def _build_and_test(
    con: duckdb.DuckDBPyConnection,
    model: Model,
    key: dg.AssetKey,
    cadence: str | None,
    as_of: datetime | None,
    run_id: str,
    evolve: bool = True,
) -> tuple[int | None, list[dg.AssetCheckResult]]:
    """Build the model (its partition for the session's as_of), run its tests and record their outcomes."""
    rows = build_model(con, model, evolve)
    checks = run_tests(con, model, key)
    quality.record_outcomes(
        con,
        model,
        {c.check_name: int(c.metadata["failing_rows"].value) for c in checks},
        cadence,
        as_of,
        run_id,
    )
    return rows, checks


def build_model_assets(
    models: list[Model], producers: dict[str, list[dg.AssetKey]], group: str = GROUP
) -> list[dg.AssetsDefinition]:
    """One asset per model (per cadence for partitioned models), deps resolved from the parsed SQL."""
    by_table = {m.table: m for m in models}
    assets = []
    for model in models:
        for cadence in model.cadences or (None,):
            deps: list[dg.AssetKey] = []
            for ref in sorted(model.refs):
                upstream = by_table.get(ref)
                if upstream is None:
                    deps += producers[ref]
                elif upstream.partitioned:
                    # Same cadence when both are partitioned; every cadence feeds an unpartitioned model.
                    cadences = [cadence] if cadence in upstream.cadences else list(upstream.cadences)
                    deps += [model_key(upstream, c) for c in cadences]
                else:
                    deps.append(model_key(upstream))
            assets.append(_model_asset(model, cadence, deps, group))
    return assets
