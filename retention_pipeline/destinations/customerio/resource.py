"""Customer.io's resource and target: the workspace when CUSTOMERIO_SITE_ID and CUSTOMERIO_API_KEY are set, else the
embedded sandbox. The real workspace is probed once at setup (region and keys), so a wrong key, host or region
fails by name instead of as a ledger full of failed requests."""

from __future__ import annotations

from typing import ClassVar

import httpx
from pydantic import Field

from retention_pipeline.config import ConfigError, env, env_parsed
from retention_pipeline.destinations.customerio.client import CustomerIoClient, CustomerIoError
from retention_pipeline.destinations.plugin import Connection
from retention_pipeline.destinations.resource import SANDBOX_CREDENTIAL, DestinationResource
from retention_pipeline.environment import Target, http_url, require_all, sandbox_or_fail, where

SANDBOX_URL = "http://customerio.sandbox.invalid"
# Customer.io's Track and App hosts per workspace region.
REGION_HOSTS = {
    "us": ("https://track.customer.io", "https://api.customer.io"),
    "eu": ("https://track-eu.customer.io", "https://api-eu.customer.io"),
}


def customerio_target(
    site_id: str | None = None,
    api_key: str | None = None,
    app_api_key: str | None = None,
    region: str | None = None,
    track_url: str | None = None,
    app_url: str | None = None,
) -> Target:
    region = env("CUSTOMERIO_REGION", region).lower()
    if region not in REGION_HOSTS:
        raise ConfigError(f"CUSTOMERIO_REGION={region!r} must be us or eu.")
    site_id = env("CUSTOMERIO_SITE_ID", site_id)
    api_key = env("CUSTOMERIO_API_KEY", api_key)
    app_api_key = env("CUSTOMERIO_APP_API_KEY", app_api_key)
    variables = ("CUSTOMERIO_SITE_ID", "CUSTOMERIO_API_KEY")
    if site_id is None and api_key is None:
        if app_api_key is not None:
            raise ConfigError(
                "CUSTOMERIO_APP_API_KEY is set but CUSTOMERIO_SITE_ID and CUSTOMERIO_API_KEY are not."
            )
        target = sandbox_or_fail("customerio", variables)
        return Target(target.system, target.identity, target.variables, {"region": region})
    require_all(("CUSTOMERIO_SITE_ID", site_id), ("CUSTOMERIO_API_KEY", api_key))
    track_default, app_default = REGION_HOSTS[region]
    track = http_url("CUSTOMERIO_TRACK_URL", env("CUSTOMERIO_TRACK_URL", track_url) or track_default)
    app = http_url("CUSTOMERIO_APP_URL", env("CUSTOMERIO_APP_URL", app_url) or app_default)
    return Target(
        "customerio",
        f"site {site_id} @ {where(track)}",
        (*variables, "CUSTOMERIO_REGION", "CUSTOMERIO_TRACK_URL"),
        {"site_id": site_id, "api_key": api_key, "app_api_key": app_api_key, "region": region,
         "track_url": track, "app_url": app},
    )  # fmt: skip


class CustomerIoResource(DestinationResource):
    """Customer.io: the workspace when CUSTOMERIO_SITE_ID and CUSTOMERIO_API_KEY are set, else a sandbox."""

    system: ClassVar[str] = "customerio"
    site_id: str | None = Field(default=None, description="Overrides CUSTOMERIO_SITE_ID.")
    api_key: str | None = Field(default=None, description="Overrides CUSTOMERIO_API_KEY.")
    app_api_key: str | None = Field(default=None, description="Overrides CUSTOMERIO_APP_API_KEY.")
    region: str | None = Field(default=None, description="Overrides CUSTOMERIO_REGION (us or eu).")
    track_url: str | None = Field(default=None, description="Overrides CUSTOMERIO_TRACK_URL.")
    app_url: str | None = Field(default=None, description="Overrides CUSTOMERIO_APP_URL.")
    requests_per_second: float | None = Field(
        default=None, description="Overrides CUSTOMERIO_REQUESTS_PER_SECOND."
    )

    def target(self) -> Target:
        """Sandbox or the workspace, from the environment (no network)."""
        return customerio_target(
            self.site_id, self.api_key, self.app_api_key, self.region, self.track_url, self.app_url
        )

    def sandbox_settings(self, target: Target) -> dict:
        return {"region": target.settings["region"]}

    def open_sandbox(self, target: Target, sandbox, transport) -> Connection:
        client = CustomerIoClient(
            SANDBOX_URL, SANDBOX_URL, SANDBOX_CREDENTIAL, SANDBOX_CREDENTIAL, SANDBOX_CREDENTIAL,
            http_client=httpx.Client(transport=transport), **self.limits(),
        )  # fmt: skip
        return Connection(client, "sandbox", "embedded Customer.io sandbox", target, sandbox)

    def open_api(self, target: Target) -> Connection:
        settings = target.settings
        region, track_url, app_url = settings["region"], settings["track_url"], settings["app_url"]
        rate = env_parsed(
            "CUSTOMERIO_REQUESTS_PER_SECOND", float, self.requests_per_second, "requests per second"
        )
        if not 0 < rate <= 10_000:
            raise ConfigError(f"CUSTOMERIO_REQUESTS_PER_SECOND={rate} is out of range (0, 10000].")
        # One quick probe (one retry, short timeout): wrong keys, host or region fail here, by name.
        with CustomerIoClient(
            track_url, app_url, settings["site_id"], settings["api_key"], max_retries=1, timeout_seconds=15
        ) as probe:
            try:
                workspace = probe.account_region()
            except CustomerIoError as error:
                raise ConfigError(
                    f"CUSTOMERIO_TRACK_URL={track_url!r} did not answer the region probe: {error}"
                ) from None
        if workspace.get("region") not in (None, region):
            raise ConfigError(
                f"CUSTOMERIO_REGION={region!r} but the workspace is in {workspace['region']!r}: its data would "
                "transit the wrong region."
            )
        client = CustomerIoClient(
            track_url, app_url, settings["site_id"], settings["api_key"], settings["app_api_key"],
            **self.limits(), requests_per_second=rate,
        )  # fmt: skip
        return Connection(client, "api", track_url, target)
