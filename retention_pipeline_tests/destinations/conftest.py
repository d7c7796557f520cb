"""One loopback port per module for the destination sandboxes (the root conftest already clears every setting)."""

from __future__ import annotations

import json
from typing import NamedTuple

import pytest

from retention_pipeline.sandbox.customerio import CustomerIoSandbox
from retention_pipeline.sandbox.google import GoogleDataManagerSandbox
from retention_pipeline.sandbox.http import LoopbackServer
from retention_pipeline.sandbox.meta import MetaSandbox
from retention_pipeline.sandbox.pinterest import PinterestSandbox
from retention_pipeline.sandbox.tiktok import TikTokSandbox
from retention_pipeline.segments.project import load_segments

# Every target segment that routes to a destination (the daily and the hourly ones).
ROUTED = tuple(s.name for s in load_segments() if s.purpose == "target" and s.destinations)
ADS = tuple(s.name for s in load_segments() if s.purpose == "target" and "meta" in s.destinations)


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


TIKTOK_ADVERTISER, PINTEREST_AD_ACCOUNT = "7000000000000000001", "549756359984"


def destination_env(urls: dict[str, str], routing_path) -> dict[str, str]:
    """Credentials and URLs that point the pipeline at destination servers as if they were the real services
    (`urls`: destination → the base URL of its server)."""
    return {
        "RETENTION_DESTINATIONS_CONFIG": str(routing_path),
        "CUSTOMERIO_SITE_ID": "site", "CUSTOMERIO_API_KEY": "track-key",
        "CUSTOMERIO_TRACK_URL": urls["customerio"], "CUSTOMERIO_APP_URL": urls["customerio"],
        "META_ACCESS_TOKEN": "meta-token", "META_AD_ACCOUNT_ID": "1234567890",
        "META_GRAPH_URL": f"{urls['meta']}/v25.0",
        "GOOGLE_ACCESS_TOKEN": "google-token", "GOOGLE_DATA_MANAGER_URL": urls["google"],
        "TIKTOK_ACCESS_TOKEN": "tiktok-token", "TIKTOK_ADVERTISER_ID": TIKTOK_ADVERTISER,
        "TIKTOK_API_URL": f"{urls['tiktok']}/open_api/v1.3",
        "PINTEREST_ACCESS_TOKEN": "pinterest-token", "PINTEREST_AD_ACCOUNT_ID": PINTEREST_AD_ACCOUNT,
        "PINTEREST_API_URL": f"{urls['pinterest']}/v5",
    }  # fmt: skip


class Destinations(NamedTuple):
    """The five destination sandboxes (each on its own loopback port) and the destinations.yaml they were given."""

    cio: CustomerIoSandbox
    meta: MetaSandbox
    google: GoogleDataManagerSandbox
    tiktok: TikTokSandbox
    pinterest: PinterestSandbox
    routing: dict


@pytest.fixture
def destinations(monkeypatch, tmp_path):
    """Every destination's sandbox on a loopback port, the pipeline pointed at them with credentials.

    destinations.yaml gives the Customer.io manual segments, Meta and TikTok audiences and Google user lists; the
    Pinterest customer lists are created by the first sync from each segment's first adds (Pinterest creates lists
    only from records) and recorded in sync.destination_objects (see `pinterest_lists`)."""
    cio, meta, google, tiktok, pinterest = (
        CustomerIoSandbox(),
        MetaSandbox(ad_account_id="1234567890"),
        GoogleDataManagerSandbox(),
        TikTokSandbox(advertiser_id=TIKTOK_ADVERTISER),
        PinterestSandbox(ad_account_id=PINTEREST_AD_ACCOUNT),
    )
    servers = {
        "customerio": cio.serve(), "meta": meta.serve(), "google": google.serve(), "tiktok": tiktok.serve(),
        "pinterest": pinterest.serve(),
    }  # fmt: skip
    ads = ADS
    routing = {
        "customerio": {"manual_segments": {s: cio.create_segment(s) for s in ROUTED}},
        "meta": {"audiences": {s: meta.create_audience(s) for s in ads}, "min_audience_floor": 0},
        "google": {"operating_account": {"accountType": "GOOGLE_ADS", "accountId": "1"},
                   "user_lists": {s: f"list-{s}" for s in ads}},
        "tiktok": {"audiences": {s: tiktok.create_audience(s) for s in ads}, "min_audience_floor": 0},
        "pinterest": {"min_audience_floor": 0},
    }  # fmt: skip
    (tmp_path / "destinations.yaml").write_text(json.dumps(routing))
    urls = {name: server.url for name, server in servers.items()}
    env = destination_env(urls, tmp_path / "destinations.yaml") | {
        "RETENTION_SANDBOX_NOW": "2026-11-20T10:30:00Z", "RETENTION_SANDBOX_CUSTOMERS": "60",
        "RETENTION_HISTORY_DAYS": "30", "RETENTION_HOURLY_HISTORY_DAYS": "2",
        "RETENTION_FIRST_RUN": "1",
        "RETENTION_RUN_HISTORY_DAYS": "2",  # `retention run` here is about sending; test_make_run covers the 30 days  # loopback "real" destinations on a fresh file (test_first_run.py covers the refusal)
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield Destinations(cio, meta, google, tiktok, pinterest, routing)
    for server in servers.values():
        server.close()


def pinterest_lists(con) -> dict[str, str]:
    """segment → the Pinterest customer list the sync created for it (sync.destination_objects)."""
    return dict(con.execute(
        "SELECT segment, arg_max(object_id, created_at) FROM sync.destination_objects "
        "WHERE destination = 'pinterest' AND kind = 'audience' GROUP BY segment"
    ).fetchall())  # fmt: skip


def membership_requests(*sandboxes) -> int:
    """Requests that change who is in an object (what sync.ledger records): every non-GET request except
    Pinterest's creation of a customer list and of its audience (recorded in sync.destination_objects)."""
    return sum(
        1
        for s in sandboxes
        for r in s.requests
        if r.method != "GET"
        and not (isinstance(s, PinterestSandbox) and r.method == "POST"
                 and r.path.endswith(("/customer_lists", "/audiences")))
    )  # fmt: skip


@pytest.fixture(scope="module")
def con():
    """An in-memory DuckDB with the identity macros (normalization and hashing as the sync engine runs them)."""
    import duckdb

    from retention_pipeline.destinations.identity import IDENTITY_MACROS_SQL

    with duckdb.connect() as connection:
        connection.execute(IDENTITY_MACROS_SQL)
        yield connection
