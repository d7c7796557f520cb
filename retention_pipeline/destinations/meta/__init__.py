"""Meta Custom Audiences (Graph API): an ad platform."""

from pathlib import Path

from retention_pipeline.destinations.meta.adapter import MetaAdapter
from retention_pipeline.destinations.meta.resource import MetaResource, meta_target
from retention_pipeline.destinations.plugin import DestinationPlugin

PLUGIN = DestinationPlugin(
    target=meta_target,
    resource=MetaResource,
    adapter=lambda connection, section, objects: MetaAdapter(connection.client, section, objects),
    payload_sql=(Path(__file__).parent / "payload.sql").read_text(),
    state_target=lambda identity, object_id, section: f"{identity} / audience {object_id}",
)
