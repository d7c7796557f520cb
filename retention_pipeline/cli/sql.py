"""`retention sql "SELECT …"`: a read-only query against the published copy (or the working file with --live)."""

from __future__ import annotations

import sys

import duckdb

from retention_pipeline.config import ConfigError
from retention_pipeline.warehouse import resolve_duckdb_path

# DuckDB enforces read-only, not a statement filter: the file opens read-only, external access off refuses ATTACH of
# another file, COPY … TO, EXPORT, reading or globbing files and URLs, INSTALL and LOAD; the locked configuration
# refuses every SET that would turn any of it back on.
READ_ONLY_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


def sql(query: str, live: bool) -> int:
    """Queries the published copy (never blocked by a running job) unless --live asks for the working file."""
    from retention_pipeline.operations.publish import published_path

    path = resolve_duckdb_path() if live else published_path()
    if not path.exists():
        raise ConfigError(f"{str(path)!r} does not exist yet: run `make run` first.")
    with duckdb.connect(str(path), read_only=True, config=READ_ONLY_CONFIG) as con:
        try:
            print(con.sql(query))
        except duckdb.Error as exc:
            reason = "the sql command is read-only" if refused(exc) else "query failed"
            print(f"{reason}: {exc}", file=sys.stderr)
            return 1
    return 0


def refused(error: duckdb.Error) -> bool:
    """DuckDB refused the statement because of READ_ONLY_CONFIG or the read-only file, not because it is wrong."""
    if isinstance(error, duckdb.PermissionException):
        return True
    return "read-only" in str(error) or "has been locked" in str(error)


def register(sub) -> None:
    parser = sub.add_parser(
        "sql", help="run a read-only query (no ATTACH, COPY … TO, files or extensions) on the published copy"
    )
    parser.add_argument("query")
    parser.add_argument(
        "--live", action="store_true", help="query the working file (fails while a job writes)"
    )
    parser.set_defaults(handler=lambda args: sql(args.query, args.live))
