"""Reads dbt_like_sql/segments/: one SELECT per segment over `features` plus a YAML header of config.

`features` is analytics.customer_features restricted to the partition being computed (the segment's cadence and
as_of). Thresholds live in the header's `params` and are substituted for `{{ name }}`; they must be numbers, so
substitution cannot inject SQL. Invalid config fails definitions load with the file name and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from retention_pipeline.models.project import SQL_ROOT, ModelError, table_refs

SEGMENTS_ROOT = SQL_ROOT / "segments"
CADENCES = ("hourly", "daily", "weekly")
PURPOSES = ("target", "suppress")
SENT_DESTINATIONS = ("customerio", "meta", "google")  # reached over the network, with credentials
DESTINATIONS = (*SENT_DESTINATIONS, "warehouse")
AD_DESTINATIONS = ("meta", "google")
SUPPRESSION_SEGMENT = "do_not_retarget"
FEATURES = "features"
_HEADER = re.compile(r"\A\s*/\*(?P<body>.*?)\*/", re.DOTALL)
_PARAM = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
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

    def sql(self, params: dict[str, float] | None = None) -> str:
        values = {**self.params, **(params or {})}
        return _PARAM.sub(lambda m: repr(values[m.group(1)]), self.sql_template)

    @property
    def ad_destinations(self) -> tuple[str, ...]:
        return tuple(d for d in self.destinations if d in AD_DESTINATIONS)


def routed_destinations(segments: list[Segment]) -> list[str]:
    """The networked destinations some target segment routes to: the ones a run needs credentials (or a sandbox)
    for."""
    return sorted(
        {d for s in segments if s.purpose == "target" for d in s.destinations} & set(SENT_DESTINATIONS)
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
    if not _NAME.match(name):
        raise _fail(path, "file name must be snake_case (it is the segment's stable name)")
    cadence = header.get("cadence")
    if cadence not in CADENCES:
        raise _fail(path, f"cadence: {cadence!r} must be one of {', '.join(CADENCES)}")
    purpose = header.get("purpose", "target")
    if purpose not in PURPOSES:
        raise _fail(path, f"purpose: {purpose!r} must be one of {', '.join(PURPOSES)}")
    destinations = header.get("destinations", [])
    if not isinstance(destinations, list) or not set(destinations) <= set(DESTINATIONS):
        raise _fail(
            path, f"destinations: {destinations!r} must be a list drawn from {', '.join(DESTINATIONS)}"
        )
    exclude = header.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(e, str) for e in exclude):
        raise _fail(path, f"exclude: {exclude!r} must be a list of segment names")
    params = header.get("params") or {}
    if not isinstance(params, dict):
        raise _fail(path, "params: must be a mapping of name to number")
    for key, value in params.items():
        _number(path, f"params.{key}", value, -1e12, 1e12)
    body = text[match.end() :].strip().rstrip(";")
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


def load_segments(root: Path = SEGMENTS_ROOT, known_tables: set[str] | None = None) -> list[Segment]:
    """Every segment file, validated together (exclusions must name existing segments; no self-exclusion)."""
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
    return segments
