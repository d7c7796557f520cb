"""The base of every destination's Dagster resource: one connection per run, closed afterwards.

Settings are read when a run sets the resource up (never at import), and a partial configuration (a site id
without its key, a token without its ad account) fails with the missing variable's name rather than quietly
falling back to the sandbox. A subclass implements `target()` (the environment's decision, no network) and
`open_api(target)`; in sandbox mode the base opens the system's embedded sandbox through `transports`, so no
vendor folder imports a sandbox.
"""

from __future__ import annotations

from typing import ClassVar

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from retention_pipeline.config import ConfigError, env, env_parsed
from retention_pipeline.destinations.plugin import Connection
from retention_pipeline.environment import Target
from retention_pipeline.transports import embedded_sandbox

SANDBOX_CREDENTIAL = "sandbox"


class DestinationResource(dg.ConfigurableResource):
    """Opens one connection per run and closes its HTTP pool afterwards."""

    max_retries: int | None = Field(default=None, description="Retries per request (default 5).")
    timeout_seconds: float | None = Field(
        default=None, description="Overrides RETENTION_DESTINATION_TIMEOUT_S (per-request timeout)."
    )

    _connection: Connection | None = PrivateAttr(default=None)

    # --- what a destination implements -------------------------------------------------------------------
    system: ClassVar[str] = ""  # the registry name

    def target(self) -> Target:
        raise NotImplementedError

    def open_api(self, target: Target) -> Connection:
        """The real service's connection (probe it here when the API has a cheap call)."""
        raise NotImplementedError

    def open_sandbox(self, target: Target, sandbox, transport: httpx.BaseTransport) -> Connection:
        """The client pointed at the in-process sandbox's transport."""
        raise NotImplementedError

    def sandbox_settings(self, target: Target) -> dict:
        """Keyword arguments for the sandbox module's `embedded()`."""
        return {}

    # --- shared ------------------------------------------------------------------------------------------
    def connection(self) -> Connection:
        """The run's client, its mode and, in sandbox mode, the `sandbox` to inspect."""
        if self._connection is None:
            self._connection = self.open()
        return self._connection

    def open(self) -> Connection:
        target = self.target()
        if target.is_sandbox:
            sandbox = embedded_sandbox(type(self).system, **self.sandbox_settings(target))
            return self.open_sandbox(target, sandbox, sandbox.transport())
        return self.open_api(target)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._connection = self.open()
        if context.log:
            context.log.info(f"{type(self).__name__}: {self._connection.mode} at {self._connection.base_url}")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._connection is not None:
            self._connection.client.close()
            self._connection = None

    def limits(self) -> dict:
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
