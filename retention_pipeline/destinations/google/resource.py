"""Google's resource and target: Data Manager when GOOGLE_ACCESS_TOKEN is set, else the embedded sandbox.

Not probed at setup: Data Manager has no cheap call that needs only a token. A bad token surfaces as
GoogleAuthError on the first request.
"""

from __future__ import annotations

from typing import ClassVar

import httpx
from pydantic import Field

from retention_pipeline.destinations.google.client import GoogleDataManagerClient
from retention_pipeline.destinations.plugin import Connection
from retention_pipeline.destinations.resource import SANDBOX_CREDENTIAL, DestinationResource
from retention_pipeline.environment import Target, token_and_url

SANDBOX_URL = "http://datamanager.sandbox.invalid"


def google_target(token: str | None = None, url: str | None = None) -> Target:
    return token_and_url("google", "GOOGLE_ACCESS_TOKEN", "GOOGLE_DATA_MANAGER_URL", token, url)


class GoogleDataManagerResource(DestinationResource):
    """Google Customer Match via Data Manager: the API when GOOGLE_ACCESS_TOKEN is set, else a sandbox."""

    system: ClassVar[str] = "google"
    access_token: str | None = Field(default=None, description="Overrides GOOGLE_ACCESS_TOKEN.")
    url: str | None = Field(default=None, description="Overrides GOOGLE_DATA_MANAGER_URL.")

    def target(self) -> Target:
        """Sandbox or the Data Manager host, from the environment (no network)."""
        return google_target(self.access_token, self.url)

    def open_sandbox(self, target: Target, sandbox, transport) -> Connection:
        client = GoogleDataManagerClient(
            url=SANDBOX_URL, access_token=SANDBOX_CREDENTIAL, http_client=httpx.Client(transport=transport),
            **self.limits(),
        )  # fmt: skip
        return Connection(client, "sandbox", "embedded Google Data Manager sandbox", target, sandbox)

    def open_api(self, target: Target) -> Connection:
        url = target.settings["url"]
        client = GoogleDataManagerClient(url=url, access_token=target.settings["token"], **self.limits())
        return Connection(client, "api", url, target)
