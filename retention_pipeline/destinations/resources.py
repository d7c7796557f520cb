"""Dagster resources for the three destinations: the real API when credentials are set, else an embedded sandbox.

Settings are read when a run sets the resource up (never at import), and a partial configuration (a site id
without its key, a token without its ad account) fails with the missing variable's name rather than quietly
falling back to the sandbox. Customer.io and Meta are probed once in real mode, so a wrong key, region or account
fails at setup instead of as a ledger full of failed requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from retention_pipeline.config import ConfigError, env, env_parsed
from retention_pipeline.destinations.customerio import CustomerIoClient, CustomerIoError
from retention_pipeline.destinations.google import GoogleDataManagerClient
from retention_pipeline.destinations.meta import MetaClient, MetaError
from retention_pipeline.destinations.sandbox.customerio import CustomerIoSandbox
from retention_pipeline.destinations.sandbox.google import GoogleDataManagerSandbox
from retention_pipeline.destinations.sandbox.meta import MetaSandbox
from retention_pipeline.environment import (
    Target,
    customerio_target,
    google_target,
    meta_target,
)

SANDBOX_CREDENTIAL = "sandbox"
SANDBOX_CUSTOMERIO_URL = "http://customerio.sandbox.invalid"
SANDBOX_META_URL = "http://meta.sandbox.invalid/v25.0"
SANDBOX_META_AD_ACCOUNT = "1234567890"
SANDBOX_GOOGLE_URL = "http://datamanager.sandbox.invalid"
_GRAPH_VERSION = re.compile(r"/v\d+\.\d+$")


@dataclass
class CustomerIoConnection:
    client: CustomerIoClient
    mode: str  # "sandbox" or "api"
    base_url: str  # the Track host
    target: Target
    sandbox: CustomerIoSandbox | None = None


@dataclass
class MetaConnection:
    client: MetaClient
    mode: str
    base_url: str  # the Graph URL with its version
    target: Target
    sandbox: MetaSandbox | None = None


@dataclass
class GoogleConnection:
    client: GoogleDataManagerClient
    mode: str
    base_url: str
    target: Target
    sandbox: GoogleDataManagerSandbox | None = None


class _DestinationResource(dg.ConfigurableResource):
    """Opens one connection per run and closes its HTTP pool afterwards."""

    max_retries: int | None = Field(default=None, description="Retries per request (default 5).")
    timeout_seconds: float | None = Field(
        default=None, description="Overrides RETENTION_DESTINATION_TIMEOUT_S (per-request timeout)."
    )

    _connection: CustomerIoConnection | MetaConnection | GoogleConnection | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._connection = self.open()
        if context.log:
            context.log.info(f"{type(self).__name__}: {self._connection.mode} at {self._connection.base_url}")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._connection is not None:
            self._connection.client.close()
            self._connection = None

    def _open_once(self) -> CustomerIoConnection | MetaConnection | GoogleConnection:
        if self._connection is None:
            self._connection = self.open()
        return self._connection

    def open(self) -> CustomerIoConnection | MetaConnection | GoogleConnection:
        raise NotImplementedError

    def _limits(self) -> dict:
        """Retries and, when RETENTION_DESTINATION_TIMEOUT_S (or the field) is set, the timeout for a client."""
        limits: dict = {"max_retries": self._retries()}
        if self.timeout_seconds is not None or env("RETENTION_DESTINATION_TIMEOUT_S") is not None:
            timeout = env_parsed("RETENTION_DESTINATION_TIMEOUT_S", float, self.timeout_seconds, "seconds")
            if not 0 < timeout <= 600:
                raise ConfigError(f"RETENTION_DESTINATION_TIMEOUT_S={timeout} is out of range (0, 600].")
            limits["timeout_seconds"] = timeout
        return limits

    def _retries(self) -> int:
        retries = 5 if self.max_retries is None else self.max_retries
        if not 0 <= retries <= 20:
            raise ConfigError(f"{type(self).__name__}.max_retries={retries} is out of range [0, 20].")
        return retries


class CustomerIoResource(_DestinationResource):
    """Customer.io: the workspace when CUSTOMERIO_SITE_ID and CUSTOMERIO_API_KEY are set, else a sandbox."""

    site_id: str | None = Field(default=None, description="Overrides CUSTOMERIO_SITE_ID.")
    api_key: str | None = Field(default=None, description="Overrides CUSTOMERIO_API_KEY.")
    app_api_key: str | None = Field(default=None, description="Overrides CUSTOMERIO_APP_API_KEY.")
    region: str | None = Field(default=None, description="Overrides CUSTOMERIO_REGION (us or eu).")
    track_url: str | None = Field(default=None, description="Overrides CUSTOMERIO_TRACK_URL.")
    app_url: str | None = Field(default=None, description="Overrides CUSTOMERIO_APP_URL.")
    requests_per_second: float | None = Field(
        default=None, description="Overrides CUSTOMERIO_REQUESTS_PER_SECOND."
    )

    def connection(self) -> CustomerIoConnection:
        """The run's client, its mode and, in sandbox mode, the `sandbox` to inspect."""
        return self._open_once()

    def target(self) -> Target:
        """Sandbox or the workspace, from the environment (no network)."""
        return customerio_target(
            self.site_id, self.api_key, self.app_api_key, self.region, self.track_url, self.app_url
        )

    def open(self) -> CustomerIoConnection:
        target = self.target()
        if target.is_sandbox:
            sandbox = CustomerIoSandbox(region=target.settings["region"])
            client = CustomerIoClient(
                SANDBOX_CUSTOMERIO_URL,
                SANDBOX_CUSTOMERIO_URL,
                SANDBOX_CREDENTIAL,
                SANDBOX_CREDENTIAL,
                SANDBOX_CREDENTIAL,
                http_client=httpx.Client(transport=sandbox.transport()),
                **self._limits(),
            )
            return CustomerIoConnection(client, "sandbox", "embedded Customer.io sandbox", target, sandbox)
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
            track_url,
            app_url,
            settings["site_id"],
            settings["api_key"],
            settings["app_api_key"],
            **self._limits(),
            requests_per_second=rate,
        )
        return CustomerIoConnection(client, "api", track_url, target)


class MetaResource(_DestinationResource):
    """Meta Custom Audiences: the ad account when META_ACCESS_TOKEN is set, else a sandbox."""

    access_token: str | None = Field(default=None, description="Overrides META_ACCESS_TOKEN.")
    ad_account_id: str | None = Field(default=None, description="Overrides META_AD_ACCOUNT_ID.")
    graph_url: str | None = Field(default=None, description="Overrides META_GRAPH_URL (with the version).")

    def connection(self) -> MetaConnection:
        """The run's client, its mode and, in sandbox mode, the `sandbox` to inspect."""
        return self._open_once()

    def target(self) -> Target:
        """Sandbox or the ad account, from the environment (no network)."""
        return meta_target(self.access_token, self.ad_account_id, self.graph_url)

    def open(self) -> MetaConnection:
        target = self.target()
        if target.is_sandbox:
            sandbox = MetaSandbox(ad_account_id=SANDBOX_META_AD_ACCOUNT)
            client = MetaClient(
                graph_url=SANDBOX_META_URL,
                access_token=SANDBOX_CREDENTIAL,
                ad_account_id=SANDBOX_META_AD_ACCOUNT,
                http_client=httpx.Client(transport=sandbox.transport()),
                **self._limits(),
            )
            return MetaConnection(client, "sandbox", "embedded Meta sandbox", target, sandbox)
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
        client = MetaClient(graph_url=graph_url, access_token=token, ad_account_id=account, **self._limits())
        return MetaConnection(client, "api", graph_url, target)


class GoogleDataManagerResource(_DestinationResource):
    """Google Customer Match via Data Manager: the API when GOOGLE_ACCESS_TOKEN is set, else a sandbox.

    Not probed at setup: Data Manager has no cheap call that needs only a token. A bad token surfaces as
    GoogleAuthError on the first request.
    """

    access_token: str | None = Field(default=None, description="Overrides GOOGLE_ACCESS_TOKEN.")
    url: str | None = Field(default=None, description="Overrides GOOGLE_DATA_MANAGER_URL.")

    def connection(self) -> GoogleConnection:
        """The run's client, its mode and, in sandbox mode, the `sandbox` to inspect."""
        return self._open_once()

    def target(self) -> Target:
        """Sandbox or the Data Manager host, from the environment (no network)."""
        return google_target(self.access_token, self.url)

    def open(self) -> GoogleConnection:
        target = self.target()
        if target.is_sandbox:
            sandbox = GoogleDataManagerSandbox()
            client = GoogleDataManagerClient(
                url=SANDBOX_GOOGLE_URL,
                access_token=SANDBOX_CREDENTIAL,
                http_client=httpx.Client(transport=sandbox.transport()),
                **self._limits(),
            )
            return GoogleConnection(
                client, "sandbox", "embedded Google Data Manager sandbox", target, sandbox
            )
        url = target.settings["url"]
        client = GoogleDataManagerClient(url=url, access_token=target.settings["token"], **self._limits())
        return GoogleConnection(client, "api", url, target)
