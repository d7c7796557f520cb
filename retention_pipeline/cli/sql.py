"""`retention sql "SELECT …"`: a read-only query against the published copy (or the working file with --live),
printed whole — every column, every value in full — as an aligned table, CSV, JSON or GitHub Markdown.

Nothing here imports Dagster (or a module that does), so the command prints the data and no Dagster warnings.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import sys
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import duckdb

from retention_pipeline.config import ConfigError
from retention_pipeline.paths import published_path, resolve_duckdb_path

# DuckDB enforces read-only, not a statement filter: the file opens read-only, external access off refuses ATTACH of
# another file, COPY … TO, EXPORT, reading or globbing files and URLs, INSTALL and LOAD; the locked configuration
# refuses every SET that would turn any of it back on.
READ_ONLY_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}

FORMATS = ("table", "csv", "json", "markdown")
# Formats people read stop at 1000 rows (and say so); csv and json feed other programs, so they get every row.
DEFAULT_MAX_ROWS = {"table": 1000, "markdown": 1000, "csv": None, "json": None}
_BATCH = 10_000
_NUMBERS = (int, float, Decimal)


@dataclass
class Result:
    columns: list[str]
    types: list[str]  # DuckDB type names, e.g. VARCHAR, JSON, DECIMAL(18,3)
    rows: list[tuple]  # at most max_rows
    total: int  # rows the query returned


def database_path(live: bool) -> Path:
    """The file to query: the working file with --live, else the published copy."""
    return resolve_duckdb_path() if live else published_path()


def sql(query: str, live: bool, fmt: str = "table", max_rows: int | None = None) -> int:
    """Queries the published copy (never blocked by a running job) unless --live asks for the working file."""
    path = database_path(live)
    if not path.exists():
        variable = "RETENTION_DUCKDB_PATH" if live else "RETENTION_PUBLISHED_PATH"
        raise ConfigError(f"{str(path)!r} ({variable}) does not exist yet: run `make run` first.")
    limit = DEFAULT_MAX_ROWS[fmt] if max_rows is None else (max_rows or None)
    with duckdb.connect(str(path), read_only=True, config=READ_ONLY_CONFIG) as con:
        try:
            result = fetch(con, query, limit)
        except duckdb.Error as exc:
            reason = "the sql command is read-only" if refused(exc) else "query failed"
            print(f"{reason}: {exc}", file=sys.stderr)
            return 1
    if result is not None:
        RENDERERS[fmt](result, sys.stdout)
        if len(result.rows) < result.total:
            print(f"({len(result.rows)} of {result.total} rows shown; use --max-rows)", file=sys.stderr)
    return 0


def fetch(con: duckdb.DuckDBPyConnection, query: str, limit: int | None) -> Result | None:
    """Runs the query and keeps the first `limit` rows, counting the rest without holding them."""
    con.execute(query)
    if con.description is None:
        return None
    columns = [d[0] for d in con.description]
    types = [str(d[1]) for d in con.description]
    rows: list[tuple] = []
    total = 0
    while batch := con.fetchmany(_BATCH):
        total += len(batch)
        room = len(batch) if limit is None else max(limit - len(rows), 0)
        rows.extend(batch[:room])
    return Result(columns, types, rows, total)


def refused(error: duckdb.Error) -> bool:
    """DuckDB refused the statement because of READ_ONLY_CONFIG or the read-only file, not because it is wrong."""
    if isinstance(error, duckdb.PermissionException):
        return True
    return "read-only" in str(error) or "has been locked" in str(error)


# --- values as text (table, csv, markdown) and as JSON ----------------------------------------------------------


def text(value: Any) -> str | None:
    """A value as it reads in a cell, in full; None stays None (NULL)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, list | tuple | dict):
        return _json(value)
    if isinstance(value, bytes | bytearray):
        return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}" for b in value)
    return str(value)  # UUID, INTERVAL (timedelta), …


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _json(value: Any) -> str:
    """JSON text: timestamps ISO-8601, decimals as exact numbers, NaN/±Infinity (not JSON numbers) as strings."""
    if value is None or isinstance(value, bool | str | int):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return json.dumps(value if math.isfinite(value) else _float_text(value))
    if isinstance(value, Decimal):
        return str(value)  # DuckDB decimals are finite: str() is a valid JSON number, digit for digit
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return json.dumps(value.isoformat())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {_json(v)}" for k, v in value.items())
            + "}"
        )
    return json.dumps(text(value), ensure_ascii=False)


# --- renderers ---------------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    """One line per row: control characters escaped, NULL spelled out."""
    shown = text(value)
    if shown is None:
        return "NULL"
    return shown.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _numeric(result: Result) -> list[bool]:
    """Columns whose values are all numbers (right-aligned)."""
    return [
        any(row[i] is not None for row in result.rows)
        and all(
            row[i] is None or (isinstance(row[i], _NUMBERS) and not isinstance(row[i], bool))
            for row in result.rows
        )
        for i in range(len(result.columns))
    ]


def _width(value: str) -> int:
    """Terminal columns a string takes: East Asian wide characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in value
    )


def _pad(value: str, width: int, right: bool) -> str:
    fill = " " * (width - _width(value))
    return fill + value if right else value + fill


def render_table(result: Result, out: TextIO) -> None:
    """Aligned plain text: a header, a rule, every row in full, and the row count."""
    header = [_cell(c) for c in result.columns]
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [max(_width(v) for v in column) for column in zip(header, *cells, strict=True)]
    numeric = _numeric(result)
    lines = [
        "  ".join(_pad(v, w, False) for v, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
        *("  ".join(_pad(v, w, n) for v, w, n in zip(row, widths, numeric, strict=True)) for row in cells),
    ]
    for line in lines:
        out.write(line.rstrip() + "\n")
    out.write(f"({result.total} row{'' if result.total == 1 else 's'})\n")


def render_csv(result: Result, out: TextIO) -> None:
    """RFC 4180: a header row, CRLF line ends, quotes where needed; NULL is an empty field."""
    writer = csv.writer(out)
    writer.writerow(result.columns)
    writer.writerows([["" if v is None else text(v) for v in row] for row in result.rows])


def render_json(result: Result, out: TextIO) -> None:
    """An array of objects, one per row (one per line); JSON columns embedded as JSON, not as strings."""
    keys = _unique(result.columns)
    embedded = [t == "JSON" for t in result.types]
    out.write("[\n" if result.rows else "[]\n")
    for n, row in enumerate(result.rows):
        fields = ", ".join(
            f"{json.dumps(k, ensure_ascii=False)}: {v if raw and v is not None else _json(v)}"
            for k, v, raw in zip(keys, row, embedded, strict=True)
        )
        out.write("  {" + fields + ("}\n" if n == len(result.rows) - 1 else "},\n"))
    if result.rows:
        out.write("]\n")


def _unique(names: list[str]) -> list[str]:
    """Object keys must differ: a repeated column name gets _2, _3, … (SELECT 1 AS a, 2 AS a)."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return keys


def render_markdown(result: Result, out: TextIO) -> None:
    """A GitHub table: pipes and backslashes escaped, line breaks as <br>, numbers right-aligned."""

    def cell(value: Any) -> str:
        shown = "NULL" if value is None else text(value)
        return (
            shown.replace("\\", "\\\\")
            .replace("|", "\\|")
            .replace("\r\n", "<br>")
            .replace("\n", "<br>")
            .replace("\r", "<br>")
        )

    out.write("| " + " | ".join(cell(c) for c in result.columns) + " |\n")
    out.write("|" + "|".join("---:" if n else "---" for n in _numeric(result)) + "|\n")
    for row in result.rows:
        out.write("| " + " | ".join(cell(v) for v in row) + " |\n")


RENDERERS = {"table": render_table, "csv": render_csv, "json": render_json, "markdown": render_markdown}


def _max_rows(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number ≥ 0")
    return int(value)


def register(sub) -> None:
    parser = sub.add_parser(
        "sql", help="run a read-only query (no ATTACH, COPY … TO, files or extensions) on the published copy"
    )
    parser.add_argument("query")
    parser.add_argument(
        "--live", action="store_true", help="query the working file (fails while a job writes)"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (aligned text, default), csv (RFC 4180 with a header), json (an array of objects), "
        "markdown (a GitHub table)",
    )
    parser.add_argument(
        "--max-rows",
        type=_max_rows,
        metavar="N",
        help="print at most N rows, 0 for all (default: 1000 for table and markdown, all for csv and json); "
        "stderr says when rows were left out",
    )
    parser.set_defaults(handler=lambda args: sql(args.query, args.live, args.format, args.max_rows))
