"""The source stage's definitions: extraction assets and the resources they need."""

import dagster as dg

from retention_pipeline.source.assets import SNAPSHOT_ASSETS, USAGE_ASSETS
from retention_pipeline.source.contacts import ContactsResource
from retention_pipeline.source.metronome import MetronomeResource

defs = dg.Definitions(
    assets=[*SNAPSHOT_ASSETS, *USAGE_ASSETS],
    resources={"metronome": MetronomeResource(), "contacts_source": ContactsResource()},
)
