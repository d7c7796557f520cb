"""The destinations stage's definitions: one activation asset per segment cadence, and the destination resources."""

import dagster as dg

from retention_pipeline.destinations.assets import build_sync_asset
from retention_pipeline.destinations.resources import (
    CustomerIoResource,
    GoogleDataManagerResource,
    MetaResource,
)
from retention_pipeline.destinations.routing import check_routing
from retention_pipeline.segments.definitions import SEGMENTS

# Every segment routed to Meta or Google has its id in destinations.yaml, or definitions load fails naming the segment
# file and line, instead of the sync aborting after other destinations were sent.
check_routing(SEGMENTS)

defs = dg.Definitions(
    assets=[build_sync_asset(c, SEGMENTS) for c in sorted({s.cadence for s in SEGMENTS})],
    resources={
        "customerio": CustomerIoResource(),
        "meta": MetaResource(),
        "google": GoogleDataManagerResource(),
    },
)
