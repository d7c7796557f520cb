"""The dbt_like_sql loader: dependencies from the SQL, load-time errors naming file and table, blocking tests."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from retention_pipeline.models.assets import build_model_assets
from retention_pipeline.models.project import ModelError, load_project
from retention_pipeline.warehouse import DuckDBWarehouse


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_dependencies_come_from_the_sql(tmp_path):
    write(tmp_path, "staging/a.sql", "SELECT * FROM raw.things")
    write(
        tmp_path,
        "staging/b.sql",
        "WITH x AS (SELECT * FROM staging.a) SELECT * FROM x JOIN raw.other USING (id)",
    )
    write(tmp_path, "analytics/c.sql", "SELECT * FROM staging.b WHERE id IN (SELECT id FROM staging.a)")
    models = load_project(tmp_path, {"raw.things", "raw.other"})
    assert [m.table for m in models].index("staging.a") < [m.table for m in models].index("staging.b")
    by_table = {m.table: m for m in models}
    assert by_table["staging.b"].refs == {"staging.a", "raw.other"}  # the CTE x is not a table
    assert by_table["analytics.c"].refs == {"staging.a", "staging.b"}


def test_the_real_project_loads_with_the_raw_tables():
    from retention_pipeline.definitions import defs

    graph = defs.get_repository_def().asset_graph
    features = graph.get(dg.AssetKey(["analytics", "customer_features_daily"]))
    assert dg.AssetKey(["staging", "stg_usage"]) in features.parent_keys
    stg_usage = graph.get(dg.AssetKey(["staging", "stg_usage"]))
    assert stg_usage.parent_keys == {
        dg.AssetKey(["raw", "metronome_usage_daily"]),
        dg.AssetKey(["raw", "metronome_usage_hourly"]),
    }


def test_unknown_reference_names_file_and_table(tmp_path):
    write(tmp_path, "staging/a.sql", "SELECT * FROM raw.nope")
    with pytest.raises(ModelError, match=r"staging/a\.sql.*unknown table raw\.nope"):
        load_project(tmp_path, {"raw.things"})


def test_cycle_names_the_files(tmp_path):
    write(tmp_path, "staging/a.sql", "SELECT * FROM staging.b")
    write(tmp_path, "staging/b.sql", "SELECT * FROM staging.a")
    with pytest.raises(ModelError, match=r"cycle.*staging/(a|b)\.sql.*staging/(a|b)\.sql"):
        load_project(tmp_path, set())


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("materialized: snapshot", "materialized"),
        ("partitioned_by: month", "partitioned_by"),
        ("tests:\n  - unique_ish: id", "unique_ish"),
        ("tests:\n  - accepted_values: id", "accepted_values"),
        ("colour: blue", "unknown header field"),
    ],
)
def test_invalid_header_names_file_and_field(tmp_path, header, message):
    write(tmp_path, "staging/a.sql", f"/*\n{header}\n*/\nSELECT 1 AS id")
    with pytest.raises(ModelError, match=rf"staging/a\.sql.*{message}"):
        load_project(tmp_path, set())


def test_a_failing_key_test_blocks_downstream_models(tmp_path):
    write(tmp_path, "staging/dupes.sql", "/*\ntests:\n  - unique: id\n*/\nSELECT 1 AS id UNION ALL SELECT 1")
    write(tmp_path, "analytics/after.sql", "SELECT * FROM staging.dupes")
    assets = build_model_assets(load_project(tmp_path, set()), {})
    warehouse = DuckDBWarehouse(path=str(tmp_path / "t.duckdb"))
    result = dg.materialize(assets, resources={"duckdb": warehouse}, raise_on_error=False)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"unique_id": False}
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey(["staging", "dupes"]) in materialized
    assert dg.AssetKey(["analytics", "after"]) not in materialized


def test_severities_are_recorded_and_only_error_tests_gate_activation(tmp_path):
    """severity: warn reports without blocking (neither downstream models nor activation); error is the default."""
    from datetime import datetime

    from retention_pipeline.models.quality import failing_error_tests

    write(
        tmp_path,
        "staging/things.sql",
        "/*\ntests:\n  - unique: id\n    severity: warn\n  - custom: {name: no_negatives, sql: "
        '"SELECT * FROM {{ this }} WHERE v < 0"}\n*/\nSELECT 1 AS id, -1 AS v UNION ALL SELECT 1, 2',
    )
    write(tmp_path, "analytics/after.sql", "SELECT * FROM staging.things")
    models = load_project(tmp_path, set())
    tests = {t.name: t for m in models for t in m.tests}
    assert (tests["unique_id"].severity, tests["unique_id"].blocking) == ("warn", False)
    assert (tests["no_negatives"].severity, tests["no_negatives"].blocking) == ("error", False)
    warehouse = DuckDBWarehouse(path=str(tmp_path / "t.duckdb"))
    result = dg.materialize(
        build_model_assets(models, {}), resources={"duckdb": warehouse}, raise_on_error=False
    )
    severities = {e.check_name: (e.passed, e.severity) for e in result.get_asset_check_evaluations()}
    assert severities == {
        "unique_id": (False, dg.AssetCheckSeverity.WARN),
        "no_negatives": (False, dg.AssetCheckSeverity.ERROR),
    }
    assert dg.AssetKey(["analytics", "after"]) in {
        e.asset_key for e in result.get_asset_materialization_events()
    }
    with warehouse.connect() as con:
        gate = failing_error_tests(con, ["staging.things"], "daily", datetime(2026, 11, 20))
    assert gate == {"staging.things.no_negatives": "staging.things.no_negatives failed (1 rows)"}


def test_a_bad_severity_names_file_and_test(tmp_path):
    write(tmp_path, "staging/a.sql", "/*\ntests:\n  - unique: id\n    severity: fatal\n*/\nSELECT 1 AS id")
    with pytest.raises(ModelError, match=r"staging/a\.sql.*severity 'fatal'"):
        load_project(tmp_path, set())
