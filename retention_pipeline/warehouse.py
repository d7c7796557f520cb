"""The DuckDB file every stage reads and writes, as a Dagster resource.

Writers queue on the `duckdb` pool (limit 1) so they never fight for the file lock; the connection itself still
retries a locked file (dagster-duckdb's backoff) for the odd writer outside Dagster.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from retention_pipeline.config import ConfigError
from retention_pipeline.paths import resolve_duckdb_path

# Session setup run on every connection: timestamps are stored as naive UTC, and `utc_ts` turns any RFC 3339
# string (Z or +hh:mm offset) into that form.
_SESSION_SQL = """
SET TimeZone = 'UTC';
CREATE OR REPLACE TEMP MACRO utc_ts(x) AS (CAST(x AS TIMESTAMPTZ) AT TIME ZONE 'UTC');
"""


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN … COMMIT, rolled back on any error without ever hiding that error.

    DuckDB aborts a transaction by itself on some failures (a full disk, an invalidated database); a ROLLBACK then
    fails with "no transaction is active". That secondary error is dropped so the original one is what surfaces."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        # If the transaction is already gone, the error being raised is the one that matters.
        with suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


class DuckDBWarehouse(dg.ConfigurableResource):
    """The retention DuckDB file; its path comes from RETENTION_DUCKDB_PATH at run time (default data/retention.duckdb)."""

    path: str | None = Field(default=None, description="Overrides RETENTION_DUCKDB_PATH.")

    def resolved_path(self) -> Path:
        return resolve_duckdb_path(self.path)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection with the session macros; keep the `with` block short (it holds the file lock)."""
        path = self.resolved_path()
        try:
            con = DuckDBResource(database=str(path)).get_connection().__enter__()
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise
            raise ConfigError(
                f"RETENTION_DUCKDB_PATH={str(path)!r} cannot be opened as DuckDB: {exc}"
            ) from exc
        # Closed on every exit: a connection left open after a fatal error (a full disk) would keep the database
        # invalidated for the rest of the process. Errors inside the block are the caller's, never "cannot open".
        try:
            con.execute(_SESSION_SQL)
            yield con
        finally:
            con.close()


def table_counts(con: duckdb.DuckDBPyConnection, schemas: tuple[str, ...]) -> list[tuple[str, int]]:
    """(schema.table, rows) for every base table in the given schemas, for summaries and metadata."""
    placeholders = ", ".join("?" for _ in schemas)
    tables = con.execute(
        f"SELECT schema_name, table_name FROM duckdb_tables() WHERE schema_name IN ({placeholders}) "
        "ORDER BY schema_name, table_name",
        list(schemas),
    ).fetchall()
    return [
        (f"{schema}.{table}", con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0])
        for schema, table in tables
    ]
