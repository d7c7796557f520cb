"""Customer.io (Track API v2 batch, App API manual segments): a messaging destination."""

from pathlib import Path

from retention_pipeline.destinations.customerio.adapter import CustomerIoAdapter
from retention_pipeline.destinations.customerio.resource import CustomerIoResource, customerio_target
from retention_pipeline.destinations.plugin import DestinationPlugin


def _state_target(identity: str, object_id: str | None, section: dict) -> str:
    return identity + (f" / segment {object_id}" if object_id else "")


PLUGIN = DestinationPlugin(
    target=customerio_target,
    resource=CustomerIoResource,
    adapter=lambda connection, section, objects: CustomerIoAdapter(connection.client, section, objects),
    payload_sql=(Path(__file__).parent / "payload.sql").read_text(),
    state_target=_state_target,
)
