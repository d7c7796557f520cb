"""Where the DuckDB files are, from the environment: the working file and the analysts' published copy.

Kept free of Dagster so the `sql` and `preview` commands resolve the same paths as the pipeline without importing it.
"""

from __future__ import annotations

from pathlib import Path

from retention_pipeline.config import ConfigError, env

RESERVED_SCHEMAS = ("raw", "staging", "analytics", "segments", "sync", "measurement", "main")


def resolve_duckdb_path(override: str | None = None) -> Path:
    """The DuckDB file from RETENTION_DUCKDB_PATH (or the override), with its folder created; fails naming the var."""
    raw = env("RETENTION_DUCKDB_PATH", override)
    path = Path(raw).expanduser()
    if path.is_dir():
        raise ConfigError(f"RETENTION_DUCKDB_PATH={raw!r} is a directory; it must name a DuckDB file.")
    if path.stem in RESERVED_SCHEMAS:
        # DuckDB names the catalog after the file: raw.duckdb would make `raw.metronome_customers` ambiguous.
        raise ConfigError(
            f"RETENTION_DUCKDB_PATH={raw!r}: the file name may not be one of the schema names "
            f"{', '.join(RESERVED_SCHEMAS)}; choose another name."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"RETENTION_DUCKDB_PATH={raw!r}: cannot create its folder ({exc.strerror})."
        ) from None
    return path


def published_path(override: str | None = None) -> Path:
    raw = env("RETENTION_PUBLISHED_PATH", override)
    path = Path(raw).expanduser() if raw else resolve_duckdb_path().with_name("retention_published.duckdb")
    if path.resolve() == resolve_duckdb_path().resolve():
        raise ConfigError(f"RETENTION_PUBLISHED_PATH={raw!r} must differ from RETENTION_DUCKDB_PATH.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
