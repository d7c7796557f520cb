"""Reads dbt_like_sql/: one SELECT per file, an optional YAML header, dependencies parsed from the SQL itself.

Errors are raised at definitions load and always name the file (and the table or field) at fault.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import duckdb
import sqlglot
import yaml
from sqlglot import exp

from retention_pipeline.cadences import NAMES as CADENCES
from retention_pipeline.source.tables import create_raw_tables

SQL_ROOT = Path(__file__).resolve().parents[2] / "dbt_like_sql"
# segments/ holds segment rules (retention_pipeline.segments); measurement/ reads what segments and syncs write, so
# it is loaded after them (retention_pipeline.measurement).
NOT_MODELS = {"segments", "measurement", "ml"}
TEST_KINDS = ("unique", "not_null", "accepted_values", "relationships", "custom")
SEVERITIES = ("error", "warn")
_HEADER = re.compile(r"\A\s*/\*(?P<body>.*?)\*/", re.DOTALL)
# The current model in a custom test: `{{ this }}`.
THIS = re.compile(r"\{\{\s*this\s*\}\}")
# Placeholders for the session variables model SQL reads (models.assets.set_run_variables sets the real ones):
# binding needs only their types, and definitions load must not read the environment.
BIND_VARIABLES = {
    "as_of": "TIMESTAMP '2026-01-01'",
    "cadence": "'daily'",
    "activity_metric": "NULL::VARCHAR",
    "attribution_days": "7",
    "lift_window_days": "14",
}


class ModelError(ValueError):
    """A SQL model or its header is invalid; the message names the file."""


@dataclass(frozen=True)
class DataTest:
    name: str
    kind: str
    sql: str  # returns the failing rows; `{{ this }}` is the model (its current partition when partitioned)
    blocking: bool
    target: str | None = None  # the table a relationships test reads
    severity: str = "error"  # error: a failure blocks activation downstream; warn: reported, never blocks


@dataclass
class Model:
    path: Path
    table: str  # schema.name, from the path
    sql: str  # the SELECT, header removed
    description: str = ""
    materialized: str = "table"  # table | view
    cadences: tuple[str, ...] = ()  # non-empty: one asset per cadence, rows keyed by (cadence, as_of)
    columns: dict[str, str] = field(default_factory=dict)
    tests: list[DataTest] = field(default_factory=list)
    refs: set[str] = field(default_factory=set)  # schema.name of every table the SQL reads
    metrics_sql: str | None = None  # one-row SELECT over {{ this }}: numeric metadata the UI plots per run
    show_sql: str | None = (
        None  # SELECT over {{ this }}: shown as a table in the asset's metadata (first 50 rows)
    )

    @property
    def schema(self) -> str:
        return self.table.split(".")[0]

    @property
    def name(self) -> str:
        return self.table.split(".")[1]

    @property
    def partitioned(self) -> bool:
        return bool(self.cadences)


def _fail(path: Path, message: str) -> ModelError:
    return ModelError(f"{path.relative_to(path.parents[1]) if len(path.parents) > 1 else path}: {message}")


def table_refs(sql: str, path: Path, unqualified: frozenset[str] = frozenset()) -> set[str]:
    """schema.table of every table read, ignoring CTE names and table functions.

    Names in `unqualified` (e.g. a segment's `features`) may appear without a schema and are returned as is."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise _fail(path, f"SQL does not parse: {exc}") from None
    if not isinstance(tree, exp.Query):
        raise _fail(path, "a model must be a single SELECT (or WITH … SELECT)")
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    refs = set()
    for table in tree.find_all(exp.Table):
        if not table.name or (not table.db and table.name in ctes):
            continue
        if not table.db and table.name in unqualified:
            refs.add(table.name)
            continue
        if not table.db:
            raise _fail(path, f"table {table.name!r} must be schema-qualified (e.g. staging.{table.name})")
        refs.add(f"{table.db}.{table.name}")
    return refs


def _tests(path: Path, table: str, raw: object, partitioned: bool) -> list[DataTest]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _fail(path, "tests: expected a list of {kind: spec}")
    tests = []
    for item in raw:
        kinds = [k for k in item if k in TEST_KINDS] if isinstance(item, dict) else []
        if len(kinds) != 1 or set(item) - {kinds[0], "severity"}:
            raise _fail(
                path, f"tests: {item!r} is not one of {', '.join(TEST_KINDS)} (plus an optional severity)"
            )
        kind, spec = kinds[0], item[kinds[0]]
        severity = item.get("severity", spec.get("severity", "error") if isinstance(spec, dict) else "error")
        if severity not in SEVERITIES:
            raise _fail(path, f"tests.{kind}: severity {severity!r} must be one of {', '.join(SEVERITIES)}")
        first = len(tests)
        key_cols = ["cadence", "as_of"] if partitioned else []
        if kind in ("unique", "not_null"):
            cols = [spec] if isinstance(spec, str) else spec
            if not cols or not all(isinstance(c, str) for c in cols):
                raise _fail(path, f"tests.{kind}: expected a column or a list of columns")
            if kind == "unique":
                group = ", ".join([*key_cols, *cols])
                sql = (
                    f"SELECT {group}, count(*) AS n FROM {{{{ this }}}} GROUP BY {group} HAVING count(*) > 1"
                )
                name = "unique_" + "_".join(cols)
            else:
                sql = "SELECT * FROM {{ this }} WHERE " + " OR ".join(f"{c} IS NULL" for c in cols)
                name = "not_null_" + "_".join(cols)
            tests.append(DataTest(name, kind, sql, blocking=True))
        elif kind == "accepted_values":
            if not isinstance(spec, dict) or "column" not in spec or not isinstance(spec.get("values"), list):
                raise _fail(path, "tests.accepted_values: expected {column, values: [...]}")
            values = ", ".join("'" + str(v).replace("'", "''") + "'" for v in spec["values"])
            sql = f"SELECT * FROM {{{{ this }}}} WHERE {spec['column']} NOT IN ({values})"
            tests.append(DataTest(f"accepted_values_{spec['column']}", kind, sql, blocking=False))
        elif kind == "relationships":
            if not isinstance(spec, dict) or not {"column", "to", "field"} <= spec.keys():
                raise _fail(path, "tests.relationships: expected {column, to, field}")
            sql = (
                f"SELECT m.* FROM {{{{ this }}}} m WHERE m.{spec['column']} IS NOT NULL AND NOT EXISTS "
                f"(SELECT 1 FROM {spec['to']} r WHERE r.{spec['field']} = m.{spec['column']})"
            )
            tests.append(
                DataTest(f"relationships_{spec['column']}", kind, sql, blocking=False, target=str(spec["to"]))
            )
        else:
            if not isinstance(spec, dict) or not {"name", "sql"} <= spec.keys():
                raise _fail(path, "tests.custom: expected {name, sql} where sql returns the failing rows")
            tests.append(
                DataTest(str(spec["name"]), kind, str(spec["sql"]), bool(spec.get("blocking", False)))
            )
        tests[first:] = [
            dataclasses.replace(t, severity=severity, blocking=t.blocking and severity == "error")
            for t in tests[first:]
        ]
    names = [t.name for t in tests]
    if len(names) != len(set(names)):
        raise _fail(path, f"tests: duplicate test names {sorted({n for n in names if names.count(n) > 1})}")
    return tests


def load_model(path: Path, root: Path) -> Model:
    text = path.read_text()
    rel = path.relative_to(root)
    if len(rel.parts) != 2:
        raise _fail(path, "models live one folder deep: <schema>/<name>.sql")
    table = f"{rel.parts[0]}.{path.stem}"
    header: dict = {}
    sql = text
    match = _HEADER.match(text)
    if match:
        try:
            parsed = yaml.safe_load(match.group("body"))
        except yaml.YAMLError as exc:
            raise _fail(path, f"header is not valid YAML: {exc}") from None
        if isinstance(parsed, dict):
            header, sql = parsed, text[match.end() :]
    unknown = set(header) - {
        "description",
        "materialized",
        "partitioned_by",
        "cadences",
        "columns",
        "tests",
        "table",
        "metrics",
        "show",
    }
    if unknown:
        raise _fail(path, f"unknown header field(s) {sorted(unknown)}")
    materialized = header.get("materialized", "table")
    if materialized not in ("table", "view"):
        raise _fail(path, f"materialized: {materialized!r} must be table or view")
    cadences: tuple[str, ...] = ()
    if header.get("partitioned_by") is not None:
        if header["partitioned_by"] != "cadence":
            raise _fail(path, "partitioned_by: only 'cadence' is supported")
        cadences = tuple(header.get("cadences") or CADENCES)
        if not set(cadences) <= set(CADENCES):
            raise _fail(path, f"cadences: {list(cadences)} must be a subset of {list(CADENCES)}")
        if materialized != "table":
            raise _fail(path, "a model partitioned by cadence must be materialized as a table")
    if header.get("table") is not None:
        table = str(header["table"])
        if not re.fullmatch(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*", table):
            raise _fail(path, f"table: {table!r} must be schema.name")
    tests = _tests(path, table, header.get("tests"), bool(cadences))
    columns = header.get("columns") or {}
    if not isinstance(columns, dict):
        raise _fail(path, "columns: expected a mapping of column name to description")
    sql = sql.strip().rstrip(";")
    return Model(
        path=path,
        table=table,
        sql=sql,
        description=str(header.get("description", "")).strip(),
        materialized=materialized,
        cadences=cadences,
        columns={str(k): str(v) for k, v in columns.items()},
        tests=tests,
        # A relationships test reads its target, so the target must be built first.
        refs=table_refs(sql, path) | {t.target for t in tests if t.target},
        metrics_sql=str(header["metrics"]).strip() if header.get("metrics") else None,
        show_sql=str(header["show"]).strip() if header.get("show") else None,
    )


def load_project(root: Path, external_tables: set[str], folders: set[str] | None = None) -> list[Model]:
    """Every model under `root` (or only in `folders`), in dependency order; unknown references and cycles fail by
    file and table."""
    paths = sorted(
        p
        for p in root.glob("*/*.sql")
        if (p.parent.name in folders if folders is not None else p.parent.name not in NOT_MODELS)
    )
    models = {m.table: m for m in (load_model(p, root) for p in paths)}
    graph: dict[str, set[str]] = {}
    for model in models.values():
        for ref in sorted(model.refs):
            if ref == model.table:
                raise _fail(model.path, f"reads its own table {ref}")
            if ref not in models and ref not in external_tables:
                raise _fail(
                    model.path, f"references unknown table {ref} (no model file and no extraction asset)"
                )
        graph[model.table] = {r for r in model.refs if r in models}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = exc.args[1]
        files = " → ".join(str(models[t].path.relative_to(root)) for t in cycle)
        raise ModelError(f"dependency cycle between models: {files}") from None
    return [models[t] for t in order]


def upstream_models(models: list[Model], tables: set[str]) -> list[str]:
    """The given model tables and every model they read, transitively (raw tables are not models)."""
    by_table = {m.table: m for m in models}
    seen: set[str] = set()
    stack = [t for t in tables if t in by_table]
    while stack:
        table = stack.pop()
        if table not in seen:
            seen.add(table)
            stack += [r for r in by_table[table].refs if r in by_table]
    return sorted(seen)


def create_typed_views(con: duckdb.DuckDBPyConnection, models: list[Model]) -> None:
    """Every model (in dependency order) as a view over empty raw tables, in a scratch connection: DuckDB then
    knows each model's columns and types exactly as the SQL produces them, without any data."""
    from retention_pipeline.models.churn.tables import create_typed_tables  # the package imports this module

    create_raw_tables(con)
    create_typed_tables(con)  # what Python assets write and SQL may read (the churn scores)
    for name, value in BIND_VARIABLES.items():
        con.execute(f"SET VARIABLE {name} = {value}")
    for model in models:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {model.schema}")
        con.execute(f"CREATE OR REPLACE VIEW {model.table} AS {model.sql}")
