"""`retention preview SEGMENT [--as-of …] [--live]`: an audience preview — the segment's SQL as it is in its file now,
evaluated against the newest features of its cadence: who would enter and exit against its newest computed
partition, the people each destination would receive after holdout, suppression and consent, and sample members
with their reason. Writes nothing: the file is opened read-only and everything lives in temp tables.

It reads the published copy by default, like `sql`: a read-only connection to the working file would hold off a
running job's writer, and the copy is at most one run behind (`--live` reads the working file).
"""

from __future__ import annotations

import difflib
import sys
from datetime import datetime
from pathlib import Path

import duckdb

from retention_pipeline.cli.sql import READ_ONLY_CONFIG, database_path
from retention_pipeline.config import ConfigError, parse_utc
from retention_pipeline.segments.engine import (
    SegmentRunError,
    audiences_query,
    evaluate_rule,
    exclude_members,
    members_sql,
)
from retention_pipeline.segments.project import SEGMENTS_ROOT, Segment, create_features_view, load_segments

SAMPLE = 10
FEATURES_TABLE = "analytics.customer_features"


def table(headers: list[str], rows: list[tuple]) -> str:
    """Rows as aligned plain-text columns (NULL shown as -, booleans as yes/no)."""
    shown = {None: "-", True: "yes", False: "no"}
    cells = [[shown[v] if isinstance(v, bool) or v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join("  " + line for line in lines)


def find_segment(name: str, root: Path) -> Segment:
    segments = {s.name: s for s in load_segments(root)}
    if name in segments:
        return segments[name]
    nearest = difflib.get_close_matches(name, sorted(segments), n=1, cutoff=0)
    raise LookupError(
        f"no segment {name!r} in {root}"
        + (f'; did you mean "{nearest[0]}"?' if nearest else "")
        + f" (known: {', '.join(sorted(segments))})"
    )


def _exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchone()[0]
    )


def _as_of(con: duckdb.DuckDBPyConnection, segment: Segment, requested: str | None) -> datetime:
    """--as-of, or the newest features partition of the segment's cadence; it must have features rows."""
    newest = con.execute(
        f"SELECT max(as_of) FROM {FEATURES_TABLE} WHERE cadence = ?", [segment.cadence]
    ).fetchone()[0]
    if newest is None:
        raise LookupError(f"{FEATURES_TABLE} has no {segment.cadence} rows yet: run the pipeline first")
    if requested is None:
        return newest
    try:
        as_of = parse_utc(requested).replace(tzinfo=None)
    except ValueError as exc:
        raise LookupError(f"--as-of {requested!r} is not ISO-8601 ({exc})") from None
    rows = con.execute(
        f"SELECT count(*) FROM {FEATURES_TABLE} WHERE cadence = ? AND as_of = ?", [segment.cadence, as_of]
    ).fetchone()[0]
    if not rows:
        raise LookupError(
            f"{FEATURES_TABLE} has no {segment.cadence} rows as of {as_of:%Y-%m-%d %H:%M} "
            f"(newest: {newest:%Y-%m-%d %H:%M})"
        )
    return as_of


def _previous(con: duckdb.DuckDBPyConnection, segment: Segment) -> tuple | None:
    """The segment's newest computed partition: (cadence, partition_key, as_of, accounts)."""
    return con.execute(
        "SELECT cadence, partition_key, as_of, accounts FROM segments.partitions WHERE segment = ? "
        "ORDER BY as_of DESC, cadence = ? DESC LIMIT 1",
        [segment.name, segment.cadence],
    ).fetchone()


def _last_error(con: duckdb.DuckDBPyConnection, segment: Segment, after: datetime | None) -> str | None:
    if not _exists(con, "segments", "errors"):
        return None
    row = con.execute(
        "SELECT as_of, error FROM segments.errors WHERE segment = ? AND (? IS NULL OR as_of > ?) "
        "ORDER BY as_of DESC LIMIT 1",
        [segment.name, after, after],
    ).fetchone()
    return f"its newest run failed (as of {row[0]:%Y-%m-%d %H:%M}): {row[1]}" if row else None


def render(con: duckdb.DuckDBPyConnection, segment: Segment, as_of: datetime) -> str:
    """The preview text; builds only temp tables."""
    con.execute("SET VARIABLE cadence = ?::VARCHAR", [segment.cadence])
    con.execute("SET VARIABLE as_of = ?::TIMESTAMP", [as_of])
    create_features_view(con, FEATURES_TABLE)
    evaluate_rule(con, segment, "preview_accounts")
    exclude_members(con, segment, "preview_accounts", as_of)
    con.execute("CREATE OR REPLACE TEMP TABLE preview_members AS FROM segments.members LIMIT 0")
    con.execute(
        f"INSERT INTO preview_members {members_sql('preview_accounts')}",
        [segment.name, segment.cadence, "preview", as_of, segment.name, segment.holdout_pct],
    )
    previous = _previous(con, segment)
    prev_key = [segment.name, previous[0], previous[1]] if previous else [segment.name, None, None]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE preview_previous AS SELECT DISTINCT customer_id FROM segments.members "
        "WHERE segment = ? AND cadence = ? AND partition_key = ?",
        prev_key,
    )
    accounts, people, held = con.execute(
        "SELECT count(DISTINCT customer_id), count(person_id), count(DISTINCT customer_id) FILTER (WHERE is_holdout) "
        "FROM preview_members"
    ).fetchone()
    enter, leave = con.execute(
        """SELECT (SELECT count(*) FROM preview_accounts WHERE customer_id NOT IN (FROM preview_previous)),
                  (SELECT count(*) FROM preview_previous WHERE customer_id NOT IN
                      (SELECT customer_id FROM preview_accounts))"""
    ).fetchone()
    out = [
        f"{segment.name} ({segment.cadence}, {segment.purpose}) as of {as_of:%Y-%m-%d %H:%M} — the SQL in "
        f"{segment.path.name} as it is now",
        f"  {accounts} accounts, {people} people, {held} accounts held out ({segment.holdout_pct:g}%)",
    ]
    if previous:
        out.append(
            f"  vs its newest computed partition ({previous[0]} {previous[1]}, as of {previous[2]:%Y-%m-%d %H:%M}, "
            f"{previous[3]} accounts): {enter} would enter, {leave} would exit"
        )
    else:
        out.append(f"  never computed yet: all {enter} would enter")
    failure = _last_error(con, segment, previous[2] if previous else None)
    if failure:
        out.append(f"  note: {failure}")
    if segment.purpose == "suppress":
        out.append(
            f"\n  A suppress segment: these {accounts} accounts' people are kept out of every ad audience."
        )
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE preview_routes (segment VARCHAR, destination VARCHAR)")
        con.executemany(
            "INSERT INTO preview_routes VALUES (?, ?)", [[segment.name, d] for d in segment.destinations]
        )
        sizes = con.execute(
            f"""WITH preview AS ({audiences_query("FROM preview_members", "FROM preview_routes")}),
            now AS (SELECT destination, count(DISTINCT person_id) AS people FROM segments.audiences
                    WHERE segment = $segment GROUP BY destination)
            SELECT r.destination, count(DISTINCT p.person_id), count(DISTINCT p.customer_id), coalesce(any_value(n.people), 0)
            FROM preview_routes AS r LEFT JOIN preview AS p USING (destination) LEFT JOIN now AS n USING (destination)
            GROUP BY r.destination ORDER BY r.destination""",
            {"segment": segment.name},
        ).fetchall()
        out += [
            "\n  Per destination, after holdout, suppression (ad platforms) and consent (ad platforms):",
            table(["destination", "people", "accounts", "people now"], sizes),
        ]
    sample = con.execute(
        f"""WITH people AS (SELECT customer_id, bool_or(is_holdout) AS holdout, count(person_id) AS people
                            FROM preview_members GROUP BY customer_id)
            SELECT customer_id, tier, reason, holdout, people,
                   CASE WHEN customer_id IN (FROM preview_previous) THEN 'stays' ELSE 'enters' END AS change
            FROM preview_accounts JOIN people USING (customer_id)
            ORDER BY change, CASE tier WHEN 'high' THEN 0 ELSE 1 END, customer_id LIMIT {SAMPLE}"""
    ).fetchall()
    out += [
        f"\n  Sample members ({len(sample)} of {accounts}; entering first):",
        table(["customer_id", "tier", "reason", "holdout", "people", "change"], sample),
    ]
    return "\n".join(out)


def preview(name: str, as_of: str | None, live: bool, root: Path) -> int:
    try:
        segment = find_segment(name, root)
    except LookupError as exc:
        print(f"preview: {exc}", file=sys.stderr)
        return 2
    path = database_path(live)
    if not path.exists():
        raise ConfigError(f"{str(path)!r} does not exist yet: run `make run` first.")
    with duckdb.connect(str(path), read_only=True, config=READ_ONLY_CONFIG) as con:
        try:
            if not _exists(con, "segments", "partitions"):
                raise LookupError(f"{path} has no computed segments yet: run the pipeline first")
            text = render(con, segment, _as_of(con, segment, as_of))
        except (LookupError, SegmentRunError) as exc:
            print(f"preview: {exc}", file=sys.stderr)
            return 1
    print(f"{text}\n\n(read-only: {path}; nothing was written)")
    return 0


def register(sub) -> None:
    parser = sub.add_parser(
        "preview",
        help="who a segment's current SQL would add and remove, per destination, with samples; writes nothing",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("segment", metavar="SEGMENT")
    parser.add_argument(
        "--as-of", help="features partition end (ISO-8601 UTC); default: the newest of the segment's cadence"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="read the working file (fails while a job writes) instead of the copy",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=SEGMENTS_ROOT,
        help="the segments folder (default: dbt_like_sql/segments)",
    )
    parser.set_defaults(handler=lambda args: preview(args.segment, args.as_of, args.live, args.root))
