"""Which asset writes which table: lineage from declarations, instead of one stage importing another's Definitions.

A stage whose SQL reads a table another stage writes (models read raw.*, measurement reads segments.* and sync.*)
and the published copy, which waits for every table, look the writer up here. Each stage declares what its assets
write from its own configuration: the source stage's raw tables, the model files (`load_project`), the segments
tables per cadence, the sync tables per cadence (`destinations.assets.declaration`). `definitions.py` still assembles the assets; a test keeps every declaration equal to the
`dagster/table_name` and `retention/writes` metadata of the asset it declares.

Stages are in data-flow order (`STAGES`); `upstream_of(stage)` is what that stage may read.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from retention_pipeline.models.project import Model

TABLE_NAME = "dagster/table_name"
WRITES = "retention/writes"  # metadata: comma-separated tables an asset writes besides dagster/table_name
STAGES = ("source", "models", "segments", "destinations", "measurement", "operations")


@dataclass(frozen=True)
class Declaration:
    """One asset and the tables it writes: the first is its `dagster/table_name`, the others its `retention/writes`.
    `cadence` is None for an unpartitioned asset."""

    key: dg.AssetKey
    tables: tuple[str, ...]
    stage: str
    cadence: str | None = None

    @property
    def metadata(self) -> dict[str, str]:
        """The asset's table metadata, as `table_producers` reads it back."""
        return {
            TABLE_NAME: self.tables[0],
            **({WRITES: ", ".join(self.tables[1:])} if self.tables[1:] else {}),
        }


def written_tables(metadata: dict | None) -> set[str]:
    """The tables asset metadata says the asset writes (`dagster/table_name` and `retention/writes`)."""
    metadata = metadata or {}
    tables = {str(metadata[TABLE_NAME])} if metadata.get(TABLE_NAME) else set()
    return tables | {t.strip() for t in str(metadata.get(WRITES, "")).split(",") if t.strip()}


def table_producers(assets: Iterable[dg.AssetsDefinition]) -> dict[str, list[dg.AssetKey]]:
    """schema.table → the asset keys that write it, from the assets' metadata (what the catalog must agree with)."""
    producers: dict[str, list[dg.AssetKey]] = {}
    for assets_def in assets:
        for spec in assets_def.specs:
            for table in sorted(written_tables(spec.metadata)):
                producers.setdefault(table, []).append(spec.key)
    return producers


def declarations_of(assets: Iterable[dg.AssetsDefinition], stage: str) -> list[Declaration]:
    """Declarations read from assets a stage built from its own configuration alone (the source stage's)."""
    declarations = []
    for assets_def in assets:
        for spec in assets_def.specs:
            metadata = spec.metadata or {}
            if metadata.get(TABLE_NAME):
                main = str(metadata[TABLE_NAME])
                others = sorted(written_tables(metadata) - {main})
                declarations.append(Declaration(spec.key, (main, *others), stage, spec.tags.get("cadence")))
    return declarations


class TableCatalog:
    """Declarations, looked up by table."""

    def __init__(self, declarations: Iterable[Declaration] = ()):
        self.declarations = tuple(declarations)

    def producers(self) -> dict[str, list[dg.AssetKey]]:
        """schema.table → the asset keys that write it (one per cadence for a partitioned writer)."""
        producers: dict[str, list[dg.AssetKey]] = {}
        for declaration in self.declarations:
            for table in sorted(declaration.tables):
                producers.setdefault(table, []).append(declaration.key)
        return producers

    def tables(self) -> set[str]:
        return {table for declaration in self.declarations for table in declaration.tables}


# Built once per process, in stage order, each stage's files resolved against what the stages before it write. The
# stage modules are imported here, not at the top: they import Declaration from this module.


@functools.cache
def models() -> list[Model]:
    """The models stage's SQL files (dbt_like_sql/ except segments/ and measurement/), in dependency order."""
    from retention_pipeline.models.project import SQL_ROOT, load_project

    return load_project(SQL_ROOT, upstream_of("models").tables())


@functools.cache
def segment_cadences() -> tuple[str, ...]:
    """The cadences that have segments: one members asset and one sync asset each."""
    from retention_pipeline.segments.project import load_segments

    return tuple(sorted({s.cadence for s in load_segments()}))


@functools.cache
def measurement_models() -> list[Model]:
    """dbt_like_sql/measurement/, resolved against every table the stages before it write."""
    from retention_pipeline.models.project import SQL_ROOT, load_project

    return load_project(SQL_ROOT, upstream_of("measurement").tables(), folders={"measurement"})


@functools.cache
def declared_by(stage: str) -> tuple[Declaration, ...]:
    """What the assets of `stage` write."""
    from retention_pipeline.destinations.assets import declaration as sync_declaration
    from retention_pipeline.models.assets import declarations as model_declarations
    from retention_pipeline.models.churn import declarations as churn_declarations
    from retention_pipeline.segments.assets import declaration as segment_declaration
    from retention_pipeline.source.assets import declarations as source_declarations

    if stage == "source":
        return tuple(source_declarations())
    if stage == "models":
        return (*model_declarations(models()), *churn_declarations())
    if stage == "segments":
        return tuple(segment_declaration(c) for c in segment_cadences())
    if stage == "destinations":
        return tuple(sync_declaration(c) for c in segment_cadences())
    if stage == "measurement":
        return tuple(model_declarations(measurement_models(), stage="measurement"))
    if stage == "operations":
        return ()  # the published copy writes a file, not a table
    raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")


@functools.cache
def upstream_of(stage: str) -> TableCatalog:
    """The declarations of every stage before `stage`: the tables it may read, and who writes them."""
    return TableCatalog(d for before in STAGES[: STAGES.index(stage)] for d in declared_by(before))
