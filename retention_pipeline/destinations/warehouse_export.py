"""The warehouse destination: each synced partition's membership and changes as Parquet files, for whatever loads
files into the team's warehouse (Snowflake stages, BigQuery external tables, S3 sync …)."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from retention_pipeline.config import ConfigError, env

EXPORTS = {
    "members": "SELECT * FROM segments.members WHERE cadence = $cadence AND partition_key = $pk",
    "changes": "SELECT * FROM segments.changes WHERE cadence = $cadence AND partition_key = $pk",
}


def export_dir(override: str | None = None) -> Path:
    raw = env("RETENTION_EXPORT_DIR", override)
    path = Path(raw).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"RETENTION_EXPORT_DIR={raw!r} cannot be created ({exc.strerror}).") from None
    return path


def export_partition(
    con: duckdb.DuckDBPyConnection, root: Path, cadence: str, partition_key: str
) -> dict[str, int]:
    """Write `<root>/<table>/cadence=<c>/partition=<key>.parquet` atomically (temp file, then rename)."""
    rows = {}
    for table, sql in EXPORTS.items():
        folder = root / table / f"cadence={cadence}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"partition={partition_key.replace(':', '')}.parquet"
        tmp = target.with_suffix(".parquet.tmp")
        literal = str(tmp).replace("'", "''")  # COPY takes no parameter for its target: quote it as a literal
        try:
            con.execute(
                f"COPY ({sql}) TO '{literal}' (FORMAT parquet)", {"cadence": cadence, "pk": partition_key}
            )
        except duckdb.Error as exc:
            raise ConfigError(
                f"RETENTION_EXPORT_DIR={str(root)!r}: cannot write {target.name} ({exc})"
            ) from exc
        os.replace(tmp, target)
        rows[table] = con.execute(
            f"SELECT count(*) FROM ({sql})", {"cadence": cadence, "pk": partition_key}
        ).fetchone()[0]
    return rows
