"""The destinations stage's definitions: one activation asset per segment cadence, and one resource per registered
destination (real or sandbox transport, chosen at run time by each resource)."""

import dagster as dg

from retention_pipeline.destinations import registry
from retention_pipeline.destinations.assets import build_sync_asset
from retention_pipeline.destinations.routing import check_routing
from retention_pipeline.segments.definitions import SEGMENTS

# Every segment routed to a destination that cannot create its object has an id in destinations.yaml, or
# definitions load fails naming the segment file and line, instead of the sync aborting after others were sent.
check_routing(SEGMENTS)

defs = dg.Definitions(
    assets=[build_sync_asset(c, SEGMENTS) for c in sorted({s.cadence for s in SEGMENTS})],
    resources={name: registry.plugin(name).resource() for name in registry.names()},
)
