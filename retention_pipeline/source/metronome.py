"""The Metronome resource: the official SDK pointed at the real API or at the embedded sandbox tenant.

The choice is made at run time from METRONOME_BEARER_TOKEN: unset → the sandbox (in-process httpx transport, no
network); set → METRONOME_API_URL (default https://api.metronome.com), probed once so a wrong URL or token fails
fast with the variable's name instead of after minutes of retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import httpx
import metronome
from pydantic import Field, PrivateAttr

from retention_pipeline.config import ConfigError, env, env_parsed, parse_utc, positive_int
from retention_pipeline.environment import Target, metronome_target
from retention_pipeline.redact import redact_url
from retention_pipeline.source.extract import ExtractionError, describe
from retention_pipeline.transports import embedded_sandbox

SANDBOX_BASE_URL = "http://metronome.sandbox.invalid"
SANDBOX_TOKEN = "sandbox"


@dataclass
class MetronomeConnection:
    """What an asset needs for one run: the SDK client and how to talk to it."""

    client: metronome.Metronome
    mode: str  # "sandbox" or "api"
    base_url: str  # where it points, for logs: without URL credentials
    concurrency: int
    sandbox: Any = None  # the in-process sandbox tenant (sandbox mode only)

    @property
    def is_sandbox(self) -> bool:
        return self.sandbox is not None


class MetronomeResource(dg.ConfigurableResource):
    """Metronome billing data: the real API when METRONOME_BEARER_TOKEN is set, else a synthetic sandbox tenant."""

    bearer_token: str | None = Field(default=None, description="Overrides METRONOME_BEARER_TOKEN.")
    api_url: str | None = Field(default=None, description="Overrides METRONOME_API_URL.")
    max_retries: int | None = Field(default=None, description="Overrides RETENTION_METRONOME_MAX_RETRIES.")
    timeout_seconds: float | None = Field(
        default=None, description="Overrides RETENTION_METRONOME_TIMEOUT_S."
    )
    concurrency: int | None = Field(default=None, description="Overrides RETENTION_METRONOME_CONCURRENCY.")
    sandbox_customers: int | None = Field(default=None, description="Overrides RETENTION_SANDBOX_CUSTOMERS.")
    sandbox_seed: int | None = Field(default=None, description="Overrides RETENTION_SANDBOX_SEED.")
    sandbox_now: str | None = Field(
        default=None, description="Overrides RETENTION_SANDBOX_NOW (ISO-8601 UTC)."
    )

    _connection: MetronomeConnection | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._connection = self.open()
        if context.log:
            context.log.info(f"Metronome source: {self._connection.mode} at {self._connection.base_url}")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._connection is not None:
            self._connection.client.close()
            self._connection = None

    def connection(self) -> MetronomeConnection:
        if self._connection is None:
            self._connection = self.open()
        return self._connection

    def target(self) -> Target:
        """Sandbox or the API the token reaches, from the environment (no network)."""
        return metronome_target(self.bearer_token, self.api_url)

    def open(self) -> MetronomeConnection:
        """Resolve the configuration (naming the env var on any error) and build the client."""
        max_retries = positive_int("RETENTION_METRONOME_MAX_RETRIES", self.max_retries, minimum=0, maximum=20)
        timeout = env_parsed("RETENTION_METRONOME_TIMEOUT_S", float, self.timeout_seconds, "seconds")
        if not 0 < timeout <= 600:
            raise ConfigError(f"RETENTION_METRONOME_TIMEOUT_S={timeout} is out of range (0, 600].")
        concurrency = positive_int("RETENTION_METRONOME_CONCURRENCY", self.concurrency, maximum=64)
        target = self.target()
        if target.is_sandbox:
            return self._open_sandbox(max_retries, timeout, concurrency)
        token, base_url = target.settings["token"], target.settings["url"]
        client = metronome.Metronome(
            bearer_token=token, base_url=base_url, max_retries=max_retries, timeout=timeout
        )
        shown = redact_url(base_url)
        _probe(client, shown)
        return MetronomeConnection(client, "api", shown, concurrency)

    def _open_sandbox(self, max_retries: int, timeout: float, concurrency: int) -> MetronomeConnection:
        now_raw = env("RETENTION_SANDBOX_NOW", self.sandbox_now)
        now = env_parsed("RETENTION_SANDBOX_NOW", parse_utc, now_raw, "ISO-8601") if now_raw else None
        sandbox = embedded_sandbox(
            "metronome",
            seed=positive_int("RETENTION_SANDBOX_SEED", self.sandbox_seed, minimum=0, maximum=2**31),
            customers=positive_int("RETENTION_SANDBOX_CUSTOMERS", self.sandbox_customers, maximum=200_000),
            now=now or datetime.now(UTC),
        )
        client = metronome.Metronome(
            bearer_token=SANDBOX_TOKEN,
            base_url=SANDBOX_BASE_URL,
            max_retries=max_retries,
            timeout=timeout,
            http_client=metronome.DefaultHttpxClient(transport=sandbox.transport()),
        )
        return MetronomeConnection(client, "sandbox", "embedded sandbox tenant", concurrency, sandbox)


def _probe(client: metronome.Metronome, shown_url: str) -> None:
    """One cheap request with few retries: an unreachable URL or a rejected token fails now, by name.

    `shown_url` is the URL without credentials; nothing the SDK raised is chained (it can quote the URL or body)."""
    try:
        client.with_options(max_retries=2, timeout=httpx.Timeout(15, connect=5)).v1.customers.list(limit=1)
    except metronome.AuthenticationError:
        raise ConfigError(f"METRONOME_BEARER_TOKEN was rejected by {shown_url} (401).") from None
    except metronome.PermissionDeniedError:
        raise ConfigError(f"METRONOME_BEARER_TOKEN may not list customers at {shown_url} (403).") from None
    except metronome.APIConnectionError as exc:
        raise ConfigError(
            f"METRONOME_API_URL={shown_url!r} is not reachable: {describe(exc.__cause__ or exc)}"
        ) from None
    except metronome.APIStatusError as exc:
        raise ExtractionError(f"GET /v1/customers (probe) at {shown_url} failed: {describe(exc)}") from None
