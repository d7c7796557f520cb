"""Pinterest's resource and target: the ad account when PINTEREST_ACCESS_TOKEN and PINTEREST_AD_ACCOUNT_ID are
set, else the embedded sandbox. The account is probed once at setup, so a token that cannot see it fails by name."""

from __future__ import annotations

from typing import ClassVar

import httpx
from pydantic import Field

from retention_pipeline.config import ConfigError, env, positive_int
from retention_pipeline.destinations.pinterest.client import PinterestClient, PinterestError
from retention_pipeline.destinations.plugin import Connection
from retention_pipeline.destinations.resource import SANDBOX_CREDENTIAL, DestinationResource
from retention_pipeline.environment import Target, http_url, require_all, sandbox_or_fail, where

SANDBOX_URL = "http://pinterest.sandbox.invalid/v5"
SANDBOX_AD_ACCOUNT = "549756359984"
VARIABLES = ("PINTEREST_ACCESS_TOKEN", "PINTEREST_AD_ACCOUNT_ID")


def pinterest_target(
    token: str | None = None, ad_account_id: str | None = None, url: str | None = None
) -> Target:
    token = env("PINTEREST_ACCESS_TOKEN", token)
    account = env("PINTEREST_AD_ACCOUNT_ID", ad_account_id)
    if token is None and account is None:
        return sandbox_or_fail("pinterest", VARIABLES)
    require_all(("PINTEREST_ACCESS_TOKEN", token), ("PINTEREST_AD_ACCOUNT_ID", account))
    if not (account.isascii() and account.isdigit() and len(account) <= 18):
        raise ConfigError(f"PINTEREST_AD_ACCOUNT_ID={account!r} is not a numeric ad account id.")
    base_url = http_url("PINTEREST_API_URL", env("PINTEREST_API_URL", url))
    if not base_url.endswith("/v5"):
        raise ConfigError(f"PINTEREST_API_URL={base_url!r} must end with the API version, /v5.")
    return Target(
        "pinterest",
        f"ad_account {account} @ {where(base_url)}",
        (*VARIABLES, "PINTEREST_API_URL"),
        {"token": token, "account": account, "url": base_url},
    )


class PinterestResource(DestinationResource):
    """Pinterest customer lists: the ad account when PINTEREST_ACCESS_TOKEN is set, else a sandbox."""

    system: ClassVar[str] = "pinterest"
    access_token: str | None = Field(default=None, description="Overrides PINTEREST_ACCESS_TOKEN.")
    ad_account_id: str | None = Field(default=None, description="Overrides PINTEREST_AD_ACCOUNT_ID.")
    url: str | None = Field(default=None, description="Overrides PINTEREST_API_URL (with /v5).")
    batch_records: int | None = Field(default=None, description="Overrides PINTEREST_BATCH_RECORDS.")

    def target(self) -> Target:
        """Sandbox or the ad account, from the environment (no network)."""
        return pinterest_target(self.access_token, self.ad_account_id, self.url)

    def sandbox_settings(self, target: Target) -> dict:
        return {"ad_account_id": SANDBOX_AD_ACCOUNT}

    def open_sandbox(self, target: Target, sandbox, transport) -> Connection:
        client = PinterestClient(
            url=SANDBOX_URL, access_token=SANDBOX_CREDENTIAL, ad_account_id=SANDBOX_AD_ACCOUNT,
            http_client=httpx.Client(transport=transport), batch_records=self._batch_records(), **self.limits(),
        )  # fmt: skip
        return Connection(client, "sandbox", "embedded Pinterest sandbox", target, sandbox)

    def open_api(self, target: Target) -> Connection:
        token, account, url = (target.settings[k] for k in ("token", "account", "url"))
        batch_records, limits = self._batch_records(), self.limits()
        probe = PinterestClient(
            url=url, access_token=token, ad_account_id=account, max_retries=1, timeout_seconds=15
        )
        with probe:
            try:
                probe.ad_account()  # PinterestAuthError (a ConfigError naming the token) passes through
            except PinterestError as error:
                raise ConfigError(
                    f"PINTEREST_AD_ACCOUNT_ID={account!r} is not readable with this token at "
                    f"PINTEREST_API_URL={url!r}: {error}"
                ) from None
        client = PinterestClient(
            url=url, access_token=token, ad_account_id=account, batch_records=batch_records, **limits
        )
        return Connection(client, "api", url, target)

    def _batch_records(self) -> int:
        return positive_int("PINTEREST_BATCH_RECORDS", self.batch_records, 1, 10_000)
