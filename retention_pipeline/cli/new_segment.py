"""`retention new-segment NAME --cadence daily --destinations customerio`: scaffolds a segment file (every header
field, a starter SELECT over `features` with tier and reason) and its fixture, both passing as written; refuses to
overwrite, then says what to do next."""

from __future__ import annotations

import sys
from pathlib import Path

from retention_pipeline.cli import python_command, retention_command
from retention_pipeline.destinations import registry
from retention_pipeline.models.project import ModelError
from retention_pipeline.segments.fixtures import fixture_path, fixture_skeleton
from retention_pipeline.segments.project import (
    CADENCES,
    NAME_PATTERN,
    PURPOSES,
    SEGMENTS_ROOT,
    load_segment,
)

NAME_RULE = "snake_case: a lowercase letter, then lowercase letters, digits or _ (at most 60 characters)"
COMMENT_COLUMN = 31  # header comments line up, like the shipped segments'


def _field(line: str, comment: str = "") -> str:
    return f"{line:<{COMMENT_COLUMN - 1}} # {comment}" if comment else line


def segment_sql(name: str, cadence: str, purpose: str, destinations: list[str]) -> str:
    """A segment file with every header field and a starter rule the fixture skeleton passes against."""
    header = "\n".join(
        [
            f"description: TODO say who is in {name} and what we do for them (shown in the Dagster UI).",
            _field(f"cadence: {cadence}", "hourly | daily | weekly"),
            _field(f"purpose: {purpose}", "target | suppress (suppress: kept out of every ad audience)"),
            _field(f"destinations: [{', '.join(destinations)}]", ", ".join(_known())),
            _field("exclude: []", "other segments whose members are removed from this one"),
            _field(f"holdout_pct: {10 if purpose == 'target' else 0}", "accounts held out to measure lift"),
            _field("min_size: 0", "a smaller segment is blocked from activation"),
            _field("max_change_pct: 50", "size guard vs the previous partition"),
            _field("guard_min_accounts: 5", "smaller swings never trip the relative guard"),
            _field("params:", "thresholds, substituted for {{ name }} (numbers only)"),
            "  max_usage_7d: 10",
        ]
    )
    return f"""/*
{header}
*/
-- One row per account: customer_id, tier (high | low) and a short reason (sent to Customer.io, shown in previews).
-- `features` is analytics.customer_features for the partition being computed (docs/reference.md, "analytics.customer_features").
SELECT
    customer_id,
    CASE WHEN usage_7d = 0 THEN 'high' ELSE 'low' END AS tier,
    printf('usage_7d=%.0f, prior week %.0f', usage_7d, usage_prior_7d) AS reason
FROM features
WHERE usage_prior_7d > 0 AND usage_7d <= {{{{ max_usage_7d }}}}
"""


def _known() -> tuple[str, ...]:
    return (*registry.names(), registry.WAREHOUSE)


def _destinations(raw: str, purpose: str) -> list[str]:
    chosen = list(dict.fromkeys(d.strip() for d in raw.split(",") if d.strip()))
    unknown = [d for d in chosen if d not in _known()]
    if unknown:
        raise ValueError(f"--destinations: {unknown[0]!r} is not one of {', '.join(_known())}")
    if purpose == "suppress" and chosen:
        raise ValueError(
            "--destinations: a suppress segment is sent nowhere (it keeps people out of ad audiences)"
        )
    if purpose == "target" and not chosen:
        raise ValueError(f"--destinations: name at least one of {', '.join(_known())}")
    return chosen


def _next_steps(
    name: str, cadence: str, destinations: list[str], sql_path: Path, test_path: Path
) -> list[str]:
    steps = [
        f"Write the description and the SELECT in {sql_path.name}; thresholds go in `params`.",
        f"{retention_command()} preview {name}    # who would enter and exit now; writes nothing",
        f"Make the accounts in {test_path.name} straddle your thresholds, then run its test:\n"
        f"     {python_command()} -m pytest retention_pipeline_tests/segments/test_segment_fixtures.py -k {name}",
    ]
    specs = [registry.spec(d) for d in destinations if d in registry.names()]
    needed = [s for s in specs if s.object_required and not s.creates_objects]
    if needed:
        entries = "\n".join(
            f'     {s.name}:\n       {s.objects_key}:\n         {name}: "<id>"' for s in needed
        )
        steps.append(
            f"Create the {' and '.join(s.label for s in needed)} object (their APIs cannot), then add its id to "
            f"destinations.yaml (definitions load fails until you do):\n{entries}"
        )
    created = [s.label for s in specs if s.creates_objects]
    if created:
        steps.append(
            f"{', '.join(created)}: the first sync creates the audience under a neutral name and records it in "
            f"sync.destination_objects (set `names: {{{name}: ...}}` in destinations.yaml to choose the name)."
        )
    if cadence == "weekly":
        steps.append(
            "A weekly segment needs `weekly` in the cadences of dbt_like_sql/analytics/customer_features.sql and a "
            "weekly job in retention_pipeline/operations/jobs.py."
        )
    return steps


def new_segment(name: str, cadence: str, destinations: str, purpose: str, root: Path) -> int:
    try:
        if not NAME_PATTERN.match(name) or len(name) > 60:
            raise ValueError(f"NAME {name!r} must be {NAME_RULE}")
        chosen = _destinations(destinations, purpose)
        if not root.is_dir():
            raise ValueError(f"--root {str(root)!r} is not a folder of segments")
    except ValueError as exc:
        print(f"new-segment: {exc}", file=sys.stderr)
        return 2
    sql_path = root / f"{name}.sql"
    test_path = root / "tests" / f"{name}.yml"
    existing = [p for p in (sql_path, test_path) if p.exists()]
    if existing:
        print(f"new-segment: {existing[0]} already exists; nothing written", file=sys.stderr)
        return 1
    sql_path.write_text(segment_sql(name, cadence, purpose, chosen))
    try:
        segment = load_segment(sql_path)  # the scaffold loads as written, or nothing is left behind
    except ModelError as exc:
        sql_path.unlink()
        print(f"new-segment: the scaffold does not load ({exc}); nothing written", file=sys.stderr)
        return 1
    test_path = fixture_path(segment)
    test_path.parent.mkdir(exist_ok=True)
    test_path.write_text(fixture_skeleton(name))
    print(f"Created {sql_path}\nCreated {test_path}\n\nNext:")
    for number, step in enumerate(_next_steps(name, cadence, chosen, sql_path, test_path), 1):
        print(f"  {number}. {step}")
    return 0


def register(sub) -> None:
    parser = sub.add_parser(
        "new-segment",
        help="scaffold a segment (SQL with its header) and its fixture",
        description="Writes ROOT/NAME.sql and ROOT/tests/NAME.yml, which pass as written; never overwrites.",
    )
    parser.add_argument("name", metavar="NAME", help=f"the segment's stable name ({NAME_RULE})")
    parser.add_argument("--cadence", required=True, choices=CADENCES)
    parser.add_argument(
        "--destinations", default="", help=f"comma list of {', '.join(_known())} (e.g. customerio,meta)"
    )
    parser.add_argument("--purpose", default="target", choices=PURPOSES)
    parser.add_argument(
        "--root",
        type=Path,
        default=SEGMENTS_ROOT,
        help="the segments folder (default: dbt_like_sql/segments)",
    )
    parser.set_defaults(
        handler=lambda args: new_segment(args.name, args.cadence, args.destinations, args.purpose, args.root)
    )
