"""TikTok's resource and target: the advertiser when TIKTOK_ACCESS_TOKEN and TIKTOK_ADVERTISER_ID are set, else the
embedded sandbox.

Probed once at setup with `GET /dmp/custom_audience/list/?page_size=1`: the cheapest call that needs the same
Audience Management permission as the writes (`/advertiser/info/` would need another scope), so a wrong token or
advertiser fails by name (TikTokAuthError, a ConfigError naming TIKTOK_ACCESS_TOKEN) instead of as a ledger of
failed requests. The probe cannot tell whether the Segment API is allowlisted for the app (reference §3.2): a
non-allowlisted app surfaces as code 40118 on the first `/segment/` request.
"""

from __future__ import annotations

import re
from typing import ClassVar

import httpx
from pydantic import Field

from retention_pipeline.config import ConfigError, env, positive_int
from retention_pipeline.destinations.plugin import Connection
from retention_pipeline.destinations.resource import SANDBOX_CREDENTIAL, DestinationResource
from retention_pipeline.destinations.tiktok.client import TikTokClient, TikTokError
from retention_pipeline.environment import Target, http_url, require_all, sandbox_or_fail, where

SANDBOX_URL = "http://tiktok.sandbox.invalid/open_api/v1.3"
SANDBOX_ADVERTISER = "7000000000000000001"
_API_VERSION = re.compile(r"/v\d+\.\d+$")


def tiktok_target(
    token: str | None = None, advertiser_id: str | None = None, url: str | None = None
) -> Target:
    token = env("TIKTOK_ACCESS_TOKEN", token)
    advertiser = env("TIKTOK_ADVERTISER_ID", advertiser_id)
    variables = ("TIKTOK_ACCESS_TOKEN", "TIKTOK_ADVERTISER_ID")
    if token is None and advertiser is None:
        return sandbox_or_fail("tiktok", variables)
    require_all(("TIKTOK_ACCESS_TOKEN", token), ("TIKTOK_ADVERTISER_ID", advertiser))
    if not advertiser.isdigit():
        raise ConfigError(f"TIKTOK_ADVERTISER_ID={advertiser!r} is not a numeric advertiser id.")
    api_url = http_url("TIKTOK_API_URL", env("TIKTOK_API_URL", url))
    return Target(
        "tiktok",
        f"advertiser {advertiser} @ {where(api_url)}",
        (*variables, "TIKTOK_API_URL"),
        {"token": token, "advertiser_id": advertiser, "url": api_url},
    )


class TikTokResource(DestinationResource):
    """TikTok custom audiences (Segment API): the advertiser when TIKTOK_ACCESS_TOKEN is set, else a sandbox."""

    system: ClassVar[str] = "tiktok"
    access_token: str | None = Field(default=None, description="Overrides TIKTOK_ACCESS_TOKEN.")
    advertiser_id: str | None = Field(default=None, description="Overrides TIKTOK_ADVERTISER_ID.")
    api_url: str | None = Field(default=None, description="Overrides TIKTOK_API_URL (with the version).")
    batch_rows: int | None = Field(
        default=None, description="Overrides TIKTOK_BATCH_ROWS (people per request)."
    )

    def target(self) -> Target:
        """Sandbox or the advertiser, from the environment (no network)."""
        return tiktok_target(self.access_token, self.advertiser_id, self.api_url)

    def sandbox_settings(self, target: Target) -> dict:
        return {"advertiser_id": SANDBOX_ADVERTISER}

    def open_sandbox(self, target: Target, sandbox, transport) -> Connection:
        client = TikTokClient(
            api_url=SANDBOX_URL, access_token=SANDBOX_CREDENTIAL, advertiser_id=SANDBOX_ADVERTISER,
            http_client=httpx.Client(transport=transport), batch_rows=self._batch_rows(), **self.limits(),
        )  # fmt: skip
        return Connection(client, "sandbox", "embedded TikTok sandbox", target, sandbox)

    def open_api(self, target: Target) -> Connection:
        token, advertiser, url = (target.settings[k] for k in ("token", "advertiser_id", "url"))
        if not _API_VERSION.search(url):
            raise ConfigError(f"TIKTOK_API_URL={url!r} must end with a pinned version, e.g. /open_api/v1.3.")
        batch_rows = self._batch_rows()
        probe = TikTokClient(
            api_url=url, access_token=token, advertiser_id=advertiser, max_retries=1, timeout_seconds=15
        )
        with probe:
            try:
                probe.audiences_page()
            except TikTokError as error:
                raise ConfigError(
                    f"TIKTOK_ADVERTISER_ID={advertiser!r}: the audiences of this advertiser are not readable with "
                    f"this token: {error}"
                ) from None
        client = TikTokClient(
            api_url=url, access_token=token, advertiser_id=advertiser, batch_rows=batch_rows, **self.limits()
        )
        return Connection(client, "api", url, target)

    def _batch_rows(self) -> int:
        return positive_int("TIKTOK_BATCH_ROWS", self.batch_rows, 1, 10_000)
