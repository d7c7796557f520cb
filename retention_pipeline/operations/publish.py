"""A read-only copy of the DuckDB file for analysts, refreshed atomically at the end of every job.

DuckDB allows one writer process and no readers while it writes, so analysts never open the live file: they open
the published copy, which is replaced in one `rename` (readers holding the old copy keep it until they reconnect).
"""

import os
import shutil
import time
from pathlib import Path

import dagster as dg

from retention_pipeline.config import ConfigError, env
from retention_pipeline.destinations.definitions import defs as destination_defs
from retention_pipeline.measurement.definitions import defs as measurement_defs
from retention_pipeline.warehouse import DuckDBWarehouse, resolve_duckdb_path

KEY = dg.AssetKey(["operations", "published_copy"])


def published_path(override: str | None = None) -> Path:
    raw = env("RETENTION_PUBLISHED_PATH", override)
    path = Path(raw).expanduser() if raw else resolve_duckdb_path().with_name("retention_published.duckdb")
    if path.resolve() == resolve_duckdb_path().resolve():
        raise ConfigError(f"RETENTION_PUBLISHED_PATH={raw!r} must differ from RETENTION_DUCKDB_PATH.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def publish(warehouse: DuckDBWarehouse, target: Path) -> int:
    """Checkpoint, copy the file bytes while holding the write lock (no writer can interleave), rename into place."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with warehouse.connect() as con:
        con.execute("CHECKPOINT")
        shutil.copyfile(warehouse.resolved_path(), tmp)
    os.replace(tmp, target)
    return target.stat().st_size


@dg.asset(
    key=KEY,
    deps=[key for a in [*measurement_defs.assets, *destination_defs.assets] for key in a.keys],
    group_name="operations",
    kinds={"duckdb"},
    pool="duckdb",
    description="A consistent, read-only copy of the DuckDB file (RETENTION_PUBLISHED_PATH) that analysts query "
    "while jobs write; replaced atomically after each run.",
)
def published_copy(context: dg.AssetExecutionContext, duckdb: DuckDBWarehouse) -> dg.MaterializeResult:
    started = time.monotonic()
    target = published_path()
    size = publish(duckdb, target)
    context.log.info(f"published {size / 1e6:.1f} MB to {target}")
    return dg.MaterializeResult(
        metadata={"path": str(target), "bytes": size, "seconds": round(time.monotonic() - started, 2)}
    )


defs = dg.Definitions(assets=[published_copy])
