"""Reads dbt_like_sql/segments/: one SELECT per segment over `features` plus a YAML header of config.

`features` is analytics.customer_features restricted to the partition being computed (the segment's cadence and
as_of). Thresholds live in the header's `params` and are substituted for `{{ name }}`; they must be numbers, so
substitution cannot inject SQL. Invalid config fails definitions load with the file name and the field; given the
models, every segment's SQL is also bound against their typed columns, so a misspelt column fails at load with the
file, the line and the nearest valid name instead of failing its cadence's run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml

from retention_pipeline.cadences import NAMES as CADENCES
from retention_pipeline.destinations import registry
from retention_pipeline.models.project import SQL_ROOT, Model, ModelError, create_typed_views, table_refs

SEGMENTS_ROOT = SQL_ROOT / "segments"
PURPOSES = ("target", "suppress")
SUPPRESSION_SEGMENT = "do_not_retarget"
FEATURES = "features"
_HEADER = re.compile(r"\A\s*/\*(?P<body>.*?)\*/", re.DOTALL)
_PARAM = re.compile(r"\{\{\s*(\w+)\s*\}\}")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")  # a segment name: snake_case
_TOP_LEVEL_KEY = re.compile(r"^(\w+)\s*:")
# DuckDB's error text: where in the statement, and which column it could not bind.
_ERROR_LINE = re.compile(r"^LINE (\d+):")
_MISSING_COLUMN = re.compile(r'(?:Referenced column|does not have a column named) "([^"]+)"')
_FIELDS = {"description", "cadence", "purpose", "destinations", "exclude", "holdout_pct", "min_size",
           "max_change_pct", "guard_min_accounts", "params"}  # fmt: skip


class SegmentError(ModelError):
    """A segment file is invalid; the message names the file and the field."""


@dataclass
class Segment:
    name: str
    path: Path
    sql_template: str
    description: str
    cadence: str
    purpose: str
    destinations: tuple[str, ...]
    exclude: tuple[str, ...]
    holdout_pct: float
    min_size: int
    max_change_pct: float
    guard_min_accounts: int = 5  # relative swings smaller than this many accounts never trip the guard
    params: dict[str, float] = field(default_factory=dict)
    refs: set[str] = field(default_factory=set)  # tables read besides `features`
    sql_line: int = 1  # the file line the SELECT starts on (after the header)
    header_lines: dict[str, int] = field(default_factory=dict)  # header field → its line in the file

    def sql(self, params: dict[str, float] | None = None) -> str:
        values = {**self.params, **(params or {})}
        return _PARAM.sub(lambda m: repr(values[m.group(1)]), self.sql_template)

    @property
    def ad_destinations(self) -> tuple[str, ...]:
        return tuple(d for d in self.destinations if d in registry.ad_names())

    def at(self, line: int | None = None, header_field: str | None = None) -> str:
        """`segments/<file>:<line>`, the prefix of every message about this segment (editors jump to it)."""
        if line is None:
            line = self.header_lines.get(header_field, 1) if header_field else self.sql_line
        return f"segments/{self.path.name}:{line}"

    def describe_error(self, error: str, columns: Iterable[str] = ()) -> str:
        """A DuckDB error on this segment's SQL as `segments/<file>:<line>: <what>`, the line mapped from the
        statement to the file; a column DuckDB could not bind gets the nearest of `columns` as a suggestion."""
        lines = [line for line in error.strip().splitlines() if line.strip()]
        where = next((int(m.group(1)) for line in lines if (m := _ERROR_LINE.match(line))), 1)
        missing = _MISSING_COLUMN.search(error)
        if missing:
            name = missing.group(1)
            scope = " or ".join([FEATURES, *sorted(self.refs)])
            what = f'column "{name}" not found in {scope}'
            nearest = difflib.get_close_matches(name, sorted(set(columns)), n=1, cutoff=0.5)
            if nearest:
                what += f'; did you mean "{nearest[0]}"?'
        else:
            # The message without DuckDB's echo of the statement (the LINE excerpt and its caret line).
            kept = []
            for line in lines:
                if _ERROR_LINE.match(line):
                    break
                kept.append(line.strip())
            what = " ".join(kept)
        return f"{self.at(self.sql_line + where - 1)}: {what}"


def routed_destinations(segments: list[Segment]) -> list[str]:
    """The networked destinations some target segment routes to: the ones a run needs credentials (or a sandbox)
    for."""
    return sorted(
        {d for s in segments if s.purpose == "target" for d in s.destinations} & set(registry.names())
    )


def _fail(path: Path, message: str) -> SegmentError:
    return SegmentError(f"segments/{path.name}: {message}")


def _number(path: Path, name: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _fail(path, f"{name}: {value!r} must be a number in [{lo}, {hi}]")
    return float(value)


def load_segment(path: Path) -> Segment:
    text = path.read_text()
    match = _HEADER.match(text)
    if not match:
        raise _fail(path, "missing the /* … */ YAML header (cadence, purpose, destinations, …)")
    try:
        header = yaml.safe_load(match.group("body"))
    except yaml.YAMLError as exc:
        raise _fail(path, f"header is not valid YAML: {exc}") from None
    if not isinstance(header, dict):
        raise _fail(path, "header must be a YAML mapping")
    unknown = set(header) - _FIELDS
    if unknown:
        raise _fail(path, f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    name = path.stem
    if not NAME_PATTERN.match(name):
        raise _fail(path, "file name must be snake_case (it is the segment's stable name)")
    cadence = header.get("cadence")
    if cadence not in CADENCES:
        raise _fail(path, f"cadence: {cadence!r} must be one of {', '.join(CADENCES)}")
    purpose = header.get("purpose", "target")
    if purpose not in PURPOSES:
        raise _fail(path, f"purpose: {purpose!r} must be one of {', '.join(PURPOSES)}")
    destinations = header.get("destinations", [])
    known = (*registry.names(), registry.WAREHOUSE)
    if not isinstance(destinations, list) or not set(destinations) <= set(known):
        raise _fail(path, f"destinations: {destinations!r} must be a list drawn from {', '.join(known)}")
    exclude = header.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(e, str) for e in exclude):
        raise _fail(path, f"exclude: {exclude!r} must be a list of segment names")
    params = header.get("params") or {}
    if not isinstance(params, dict):
        raise _fail(path, "params: must be a mapping of name to number")
    for key, value in params.items():
        _number(path, f"params.{key}", value, -1e12, 1e12)
    rest = text[match.end() :]
    body = rest.strip().rstrip(";")
    sql_line = text.count("\n", 0, match.end() + len(rest) - len(rest.lstrip())) + 1
    header_start = text.count("\n", 0, match.start("body")) + 1
    header_lines = {}
    for offset, line in enumerate(match.group("body").splitlines()):
        key = _TOP_LEVEL_KEY.match(line)
        if key and key.group(1) not in header_lines:
            header_lines[key.group(1)] = header_start + offset
    missing = sorted({m.group(1) for m in _PARAM.finditer(body)} - set(params))
    if missing:
        raise _fail(path, f"params: {{{{ {missing[0]} }}}} is used in the SQL but not defined in params")
    segment = Segment(
        name=name,
        path=path,
        sql_template=body,
        description=str(header.get("description", "")).strip(),
        cadence=cadence,
        purpose=purpose,
        destinations=tuple(destinations),
        exclude=tuple(exclude),
        holdout_pct=_number(
            path, "holdout_pct", header.get("holdout_pct", 10 if purpose == "target" else 0), 0, 100
        ),
        min_size=int(_number(path, "min_size", header.get("min_size", 0), 0, 1e9)),
        max_change_pct=_number(path, "max_change_pct", header.get("max_change_pct", 50), 0, 1e6),
        guard_min_accounts=int(
            _number(path, "guard_min_accounts", header.get("guard_min_accounts", 5), 0, 1e9)
        ),
        params={k: float(v) for k, v in params.items()},
        sql_line=sql_line,
        header_lines=header_lines,
    )
    if not segment.description:
        raise _fail(path, "description: required (say what the segment is for)")
    if purpose == "suppress" and segment.holdout_pct:
        raise _fail(path, "holdout_pct: a suppression segment cannot hold anyone out")
    try:
        segment.refs = table_refs(segment.sql(), path, frozenset({FEATURES})) - {FEATURES}
    except ModelError as exc:
        raise _fail(path, str(exc).split(": ", 1)[-1]) from None
    return segment


def load_segments(
    root: Path = SEGMENTS_ROOT, known_tables: set[str] | None = None, models: list[Model] | None = None
) -> list[Segment]:
    """Every segment file, validated together (exclusions must name existing segments; no self-exclusion); with
    `models`, every segment's SQL is also bound against their typed columns (`bind_segments`)."""
    segments = [load_segment(p) for p in sorted(root.glob("*.sql"))]
    names = {s.name for s in segments}
    for segment in segments:
        for other in segment.exclude:
            if other not in names or other == segment.name:
                raise _fail(
                    segment.path, f"exclude: {other!r} is not another segment (known: {sorted(names)})"
                )
        if known_tables is not None:
            unknown = sorted(segment.refs - known_tables)
            if unknown:
                raise _fail(
                    segment.path, f"references unknown table {unknown[0]} (use `features` or a model)"
                )
    if segments and SUPPRESSION_SEGMENT not in names:
        raise SegmentError(f"segments/: the global suppression segment {SUPPRESSION_SEGMENT}.sql is missing")
    if models is not None:
        bind_segments(segments, models)
    return segments


def bind_segments(segments: list[Segment], models: list[Model]) -> None:
    """Bind every segment's SQL (DESCRIBE, no data) against `features` and the models it reads, typed exactly as
    the models produce them over the raw tables' DDL; the first that does not bind, or returns no customer_id,
    fails naming the file, the line and the nearest valid column."""
    with duckdb.connect(":memory:") as con:
        create_typed_views(con, models)
        # Typed once as an empty table: binding each segment then skips re-binding the features model's SQL.
        con.execute("CREATE TEMP TABLE typed_features AS FROM analytics.customer_features LIMIT 0")
        create_features_view(con, "typed_features")
        for segment in segments:
            try:
                returned = [row[0] for row in con.execute(f"DESCRIBE ({segment.sql()})").fetchall()]
            except duckdb.Error as exc:
                raise SegmentError(segment.describe_error(str(exc), readable_columns(con, segment))) from None
            if "customer_id" not in returned:
                raise SegmentError(
                    f"{segment.at()}: must return a customer_id column (it returns {', '.join(returned)})"
                )


def create_features_view(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """`features` for segment SQL: `source` restricted to the session's cadence and as_of (getvariable)."""
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {FEATURES} AS SELECT * FROM {source} "
        "WHERE cadence = getvariable('cadence') AND as_of = getvariable('as_of')"
    )


def readable_columns(con: duckdb.DuckDBPyConnection, segment: Segment) -> list[str]:
    """Every column the segment may read: `features` and the tables it references (for "did you mean")."""
    columns = []
    for table in [FEATURES, *sorted(segment.refs)]:
        try:
            columns += [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
        except duckdb.Error:
            continue  # a table that does not exist has no columns to suggest
    return columns
