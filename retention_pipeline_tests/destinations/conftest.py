"""One loopback port per module for the destination sandboxes (the root conftest already clears every setting)."""

from __future__ import annotations

import json

import pytest

from retention_pipeline.destinations.sandbox.customerio import CustomerIoSandbox
from retention_pipeline.destinations.sandbox.google import GoogleDataManagerSandbox
from retention_pipeline.destinations.sandbox.meta import MetaSandbox
from retention_pipeline.sandbox.http import LoopbackServer

# Every target segment that routes to a destination (the daily and the hourly ones).
ROUTED = ("usage_drop_wow", "renewal_7d_low_activity", "winback_lapsed_45_120", "credits_low",
          "failed_payment_active")  # fmt: skip


class _Switch:
    """Forwards to the current test's sandbox, so one loopback port serves a whole module."""

    target = None

    def handle(self, request):
        return self.target.handle(request)


@pytest.fixture(scope="module")
def loopback():
    """A real loopback server per module: closing one waits out `serve_forever`'s 0.5 s poll, too slow per test."""
    switch = _Switch()
    with LoopbackServer(switch, "127.0.0.1", 0) as server:
        yield switch, server


@pytest.fixture
def server(loopback, sandbox):
    """The test's `sandbox` fixture on the module's loopback port."""
    switch, running = loopback
    switch.target = sandbox
    yield running
    switch.target = None


def destination_env(cio_url: str, meta_url: str, google_url: str, routing_path) -> dict[str, str]:
    """Credentials and URLs that point the pipeline at destination servers as if they were the real services."""
    return {
        "RETENTION_DESTINATIONS_CONFIG": str(routing_path),
        "CUSTOMERIO_SITE_ID": "site", "CUSTOMERIO_API_KEY": "track-key",
        "CUSTOMERIO_TRACK_URL": cio_url, "CUSTOMERIO_APP_URL": cio_url,
        "META_ACCESS_TOKEN": "meta-token", "META_AD_ACCOUNT_ID": "1234567890", "META_GRAPH_URL": f"{meta_url}/v25.0",
        "GOOGLE_ACCESS_TOKEN": "google-token", "GOOGLE_DATA_MANAGER_URL": google_url,
    }  # fmt: skip


@pytest.fixture
def destinations(monkeypatch, tmp_path):
    """Customer.io, Meta and Google sandboxes on loopback ports, the pipeline pointed at them with credentials."""
    cio, meta, google = (
        CustomerIoSandbox(),
        MetaSandbox(ad_account_id="1234567890"),
        GoogleDataManagerSandbox(),
    )
    servers = [cio.serve(), meta.serve(), google.serve()]
    ads = [s for s in ROUTED if s != "failed_payment_active"]
    routing = {
        "customerio": {"manual_segments": {s: cio.create_segment(s) for s in ROUTED}},
        "meta": {"audiences": {s: meta.create_audience(s) for s in ads}, "min_audience_floor": 0},
        "google": {"operating_account": {"accountType": "GOOGLE_ADS", "accountId": "1"},
                   "user_lists": {s: f"list-{s}" for s in ads}},
    }  # fmt: skip
    (tmp_path / "destinations.yaml").write_text(json.dumps(routing))
    env = destination_env(servers[0].url, servers[1].url, servers[2].url, tmp_path / "destinations.yaml") | {
        "RETENTION_SANDBOX_NOW": "2026-11-20T10:30:00Z", "RETENTION_SANDBOX_CUSTOMERS": "60",
        "RETENTION_HISTORY_DAYS": "30", "RETENTION_HOURLY_HISTORY_DAYS": "2",
        "RETENTION_FIRST_RUN": "1",
        "RETENTION_RUN_HISTORY_DAYS": "2",  # `retention run` here is about sending; test_make_run covers the 30 days  # loopback "real" destinations on a fresh file (test_first_run.py covers the refusal)
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield cio, meta, google, routing
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def con():
    """An in-memory DuckDB with the identity macros (normalization and hashing as the sync engine runs them)."""
    import duckdb

    from retention_pipeline.destinations.identity import IDENTITY_MACROS_SQL

    with duckdb.connect() as connection:
        connection.execute(IDENTITY_MACROS_SQL)
        yield connection
