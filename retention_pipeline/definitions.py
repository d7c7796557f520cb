"""The one place the project's definitions are assembled: each stage exposes `defs`, the root merges them."""

import dagster as dg

from retention_pipeline.destinations import definitions as destinations
from retention_pipeline.environment import build_bindings_asset
from retention_pipeline.measurement import definitions as measurement
from retention_pipeline.models import definitions as models
from retention_pipeline.models.churn import assets as churn
from retention_pipeline.operations import jobs, notifications, publish
from retention_pipeline.segments import definitions as segments
from retention_pipeline.segments.project import routed_destinations
from retention_pipeline.source import definitions as source
from retention_pipeline.warehouse import DuckDBWarehouse

# The systems a run needs: the source and every destination a target segment routes to.
SYSTEMS_IN_USE = ["metronome", *routed_destinations(segments.SEGMENTS)]

defs = dg.Definitions.merge(
    dg.Definitions(assets=[build_bindings_asset(SYSTEMS_IN_USE)]),
    source.defs,
    models.defs,
    churn.defs,
    segments.defs,
    destinations.defs,
    measurement.defs,
    jobs.defs,
    notifications.defs,
    publish.defs,
    dg.Definitions(resources={"duckdb": DuckDBWarehouse()}),
)
