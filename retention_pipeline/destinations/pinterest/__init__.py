"""Pinterest customer lists and audiences (REST API v5): an ad platform."""

from pathlib import Path

from retention_pipeline.destinations.pinterest.adapter import PinterestAdapter
from retention_pipeline.destinations.pinterest.resource import PinterestResource, pinterest_target
from retention_pipeline.destinations.plugin import DestinationPlugin

PLUGIN = DestinationPlugin(
    target=pinterest_target,
    resource=PinterestResource,
    adapter=lambda connection, section, objects: PinterestAdapter(connection.client, section, objects),
    payload_sql=(Path(__file__).parent / "payload.sql").read_text(),
    # A list created by the first sync that adds people (Pinterest creates lists only from records) is planned
    # under a pending target; the engine re-keys its state to the list id as soon as the send created it.
    state_target=lambda identity, object_id, section: f"{identity} / customer_list {object_id}",
)
