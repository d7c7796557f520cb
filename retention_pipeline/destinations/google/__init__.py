"""Google Customer Match through the Data Manager API: an ad platform."""

from pathlib import Path

from retention_pipeline.destinations.google.adapter import GoogleAdapter
from retention_pipeline.destinations.google.resource import GoogleDataManagerResource, google_target
from retention_pipeline.destinations.plugin import DestinationPlugin


def _state_target(identity: str, object_id: str | None, section: dict) -> str:
    account = section.get("operating_account") or {}
    return f"{identity} / {account.get('accountType')}:{account.get('accountId')} / user_list {object_id}"


ACCOUNT_FIELDS = ("accountType", "accountId")


def _check_section(section: dict) -> list[str]:
    account = section.get("operating_account") or {}
    if all(account.get(f) for f in ACCOUNT_FIELDS):
        return []
    return [f"has no google.operating_account {{{', '.join(ACCOUNT_FIELDS)}}}"]


PLUGIN = DestinationPlugin(
    target=google_target,
    resource=GoogleDataManagerResource,
    adapter=lambda connection, section, objects: GoogleAdapter(connection.client, section, objects),
    payload_sql=(Path(__file__).parent / "payload.sql").read_text(),
    state_target=_state_target,
    check_section=_check_section,
)
