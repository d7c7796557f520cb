"""TikTok custom audiences (API for Business, Segment "Streaming" API): an ad platform."""

from pathlib import Path

from retention_pipeline.destinations.plugin import DestinationPlugin
from retention_pipeline.destinations.tiktok.adapter import TikTokAdapter
from retention_pipeline.destinations.tiktok.resource import TikTokResource, tiktok_target

PLUGIN = DestinationPlugin(
    target=tiktok_target,
    resource=TikTokResource,
    adapter=lambda connection, section, objects: TikTokAdapter(connection.client, section, objects),
    payload_sql=(Path(__file__).parent / "payload.sql").read_text(),
    state_target=lambda identity, object_id, section: f"{identity} / audience {object_id}",
)
