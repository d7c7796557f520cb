"""Meta's resource and target: the ad account when META_ACCESS_TOKEN is set, else the embedded sandbox. The account
is probed once at setup, so a token that cannot see it fails by name."""

from __future__ import annotations

import re
from typing import ClassVar

import httpx
from pydantic import Field

from retention_pipeline.config import ConfigError, env
from retention_pipeline.destinations.meta.client import MetaClient, MetaError
from retention_pipeline.destinations.plugin import Connection
from retention_pipeline.destinations.resource import SANDBOX_CREDENTIAL, DestinationResource
from retention_pipeline.environment import Target, http_url, require_all, sandbox_or_fail, where

SANDBOX_URL = "http://meta.sandbox.invalid/v25.0"
SANDBOX_AD_ACCOUNT = "1234567890"
_GRAPH_VERSION = re.compile(r"/v\d+\.\d+$")


def meta_target(token: str | None = None, account: str | None = None, graph_url: str | None = None) -> Target:
    token = env("META_ACCESS_TOKEN", token)
    account = env("META_AD_ACCOUNT_ID", account)
    variables = ("META_ACCESS_TOKEN", "META_AD_ACCOUNT_ID")
    if token is None and account is None:
        return sandbox_or_fail("meta", variables)
    require_all(("META_ACCESS_TOKEN", token), ("META_AD_ACCOUNT_ID", account))
    url = http_url("META_GRAPH_URL", env("META_GRAPH_URL", graph_url))
    account_id = account.removeprefix("act_")
    return Target(
        "meta",
        f"act_{account_id} @ {where(url)}",
        (*variables, "META_GRAPH_URL"),
        {"token": token, "account": account, "graph_url": url},
    )


class MetaResource(DestinationResource):
    """Meta Custom Audiences: the ad account when META_ACCESS_TOKEN is set, else a sandbox."""

    system: ClassVar[str] = "meta"
    access_token: str | None = Field(default=None, description="Overrides META_ACCESS_TOKEN.")
    ad_account_id: str | None = Field(default=None, description="Overrides META_AD_ACCOUNT_ID.")
    graph_url: str | None = Field(default=None, description="Overrides META_GRAPH_URL (with the version).")

    def target(self) -> Target:
        """Sandbox or the ad account, from the environment (no network)."""
        return meta_target(self.access_token, self.ad_account_id, self.graph_url)

    def sandbox_settings(self, target: Target) -> dict:
        return {"ad_account_id": SANDBOX_AD_ACCOUNT}

    def open_sandbox(self, target: Target, sandbox, transport) -> Connection:
        client = MetaClient(
            graph_url=SANDBOX_URL, access_token=SANDBOX_CREDENTIAL, ad_account_id=SANDBOX_AD_ACCOUNT,
            http_client=httpx.Client(transport=transport), **self.limits(),
        )  # fmt: skip
        return Connection(client, "sandbox", "embedded Meta sandbox", target, sandbox)

    def open_api(self, target: Target) -> Connection:
        token, account, graph_url = (target.settings[k] for k in ("token", "account", "graph_url"))
        if not _GRAPH_VERSION.search(graph_url):
            raise ConfigError(f"META_GRAPH_URL={graph_url!r} must end with a pinned version, e.g. /v25.0.")
        probe = MetaClient(
            graph_url=graph_url, access_token=token, ad_account_id=account, max_retries=1, timeout_seconds=15
        )
        with probe:
            try:
                probe.ad_account()
            except MetaError as error:
                raise ConfigError(
                    f"META_AD_ACCOUNT_ID={account!r} is not readable with this token: {error}"
                ) from None
        client = MetaClient(graph_url=graph_url, access_token=token, ad_account_id=account, **self.limits())
        return Connection(client, "api", graph_url, target)
