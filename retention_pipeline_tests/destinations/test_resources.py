"""Destination resources: sandbox without credentials, real host with them, named errors for partial settings."""

from __future__ import annotations

import dagster as dg
import pytest

from retention_pipeline.config import ConfigError
from retention_pipeline.destinations.customerio.client import CustomerIoClient
from retention_pipeline.destinations.customerio.resource import CustomerIoResource
from retention_pipeline.destinations.google.resource import GoogleDataManagerResource
from retention_pipeline.destinations.identity import email_sha256
from retention_pipeline.destinations.meta.resource import MetaResource
from retention_pipeline.destinations.pinterest.resource import PinterestResource
from retention_pipeline.destinations.plugin import Connection
from retention_pipeline.destinations.tiktok.resource import TikTokResource
from retention_pipeline.sandbox.customerio import CustomerIoSandbox
from retention_pipeline.sandbox.google import GoogleDataManagerSandbox
from retention_pipeline.sandbox.meta import MetaSandbox
from retention_pipeline.sandbox.pinterest import PinterestSandbox
from retention_pipeline.sandbox.tiktok import TikTokSandbox

DESTINATIONS = [
    {"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1"}, "productDestinationId": "77"}
]
GRANTED = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"}


def test_without_credentials_each_resource_wires_its_sandbox():
    cio = CustomerIoResource().connection()
    segment = cio.client.create_segment("churn_risk")
    cio.client.batch(
        [{"type": "person", "identifiers": {"id": "42"}, "action": "identify", "attributes": {}}]
    )
    cio.client.segment_add(segment["id"], ["42"])
    assert cio.mode == "sandbox" and cio.sandbox.segment_members(segment["id"]) == {"42"}

    meta = MetaResource().connection()
    audience = meta.client.create_audience("churn_risk")
    meta.client.add_users(audience, ["EMAIL"], [[email_sha256("a@b.co")]], session_id=1)
    assert meta.mode == "sandbox" and meta.sandbox.members(audience) == {email_sha256("a@b.co")}

    google = GoogleDataManagerResource().connection()
    member = {"userData": {"userIdentifiers": [{"emailAddress": email_sha256("a@b.co")}]}, "consent": GRANTED}
    (result,) = google.client.ingest(DESTINATIONS, [member])
    assert google.mode == "sandbox" and result.ok and google.sandbox.member_count("77") == 1

    tiktok = TikTokResource().connection()
    audience = tiktok.client.create_audience("churn_risk")
    assert tiktok.mode == "sandbox" and audience in tiktok.sandbox.audiences

    pinterest = PinterestResource().connection()
    created = pinterest.client.create_customer_list("churn_risk", [email_sha256("a@b.co")])
    assert pinterest.mode == "sandbox" and pinterest.sandbox.members(created["id"]) == {
        email_sha256("a@b.co")
    }

    # Each is the plug-in interface's Connection, holding the in-process sandbox (a fresh one per resource).
    sandboxes = (CustomerIoSandbox, MetaSandbox, GoogleDataManagerSandbox, TikTokSandbox, PinterestSandbox)
    for connection, kind in zip((cio, meta, google, tiktok, pinterest), sandboxes, strict=True):
        assert isinstance(connection, Connection) and isinstance(connection.sandbox, kind)
        assert connection.target.is_sandbox


@pytest.mark.parametrize(
    ("resource", "env", "missing"),
    [
        (CustomerIoResource, {"CUSTOMERIO_SITE_ID": "site"}, "CUSTOMERIO_API_KEY"),
        (CustomerIoResource, {"CUSTOMERIO_API_KEY": "key"}, "CUSTOMERIO_SITE_ID"),
        (CustomerIoResource, {"CUSTOMERIO_APP_API_KEY": "app"}, "CUSTOMERIO_SITE_ID"),
        (MetaResource, {"META_ACCESS_TOKEN": "token"}, "META_AD_ACCOUNT_ID"),
        (MetaResource, {"META_AD_ACCOUNT_ID": "123"}, "META_ACCESS_TOKEN"),
        (TikTokResource, {"TIKTOK_ACCESS_TOKEN": "token"}, "TIKTOK_ADVERTISER_ID"),
        (TikTokResource, {"TIKTOK_ADVERTISER_ID": "7000000000000000001"}, "TIKTOK_ACCESS_TOKEN"),
        (PinterestResource, {"PINTEREST_ACCESS_TOKEN": "token"}, "PINTEREST_AD_ACCOUNT_ID"),
        (PinterestResource, {"PINTEREST_AD_ACCOUNT_ID": "549756359984"}, "PINTEREST_ACCESS_TOKEN"),
    ],
)
def test_partial_credentials_name_the_missing_variable(monkeypatch, resource, env, missing):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=missing) as caught:
        resource().open()
    assert not any(value in str(caught.value) for value in env.values())


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CUSTOMERIO_REGION": "ap"}, "CUSTOMERIO_REGION"),
        ({"CUSTOMERIO_SITE_ID": "s", "CUSTOMERIO_API_KEY": "k", "CUSTOMERIO_TRACK_URL": "ftp://x"}, "CUSTOMERIO_TRACK_URL"),
        ({"CUSTOMERIO_SITE_ID": "s", "CUSTOMERIO_API_KEY": "k", "CUSTOMERIO_REQUESTS_PER_SECOND": "0"}, "CUSTOMERIO_REQUESTS_PER_SECOND"),
        ({"META_ACCESS_TOKEN": "t", "META_AD_ACCOUNT_ID": "1", "META_GRAPH_URL": "https://graph.facebook.com"}, "META_GRAPH_URL"),
        ({"META_ACCESS_TOKEN": "t", "META_AD_ACCOUNT_ID": "act_x1"}, "META_AD_ACCOUNT_ID"),
    ],
)  # fmt: skip
def test_bad_settings_are_named(monkeypatch, env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    resource = CustomerIoResource if named.startswith("CUSTOMERIO") else MetaResource
    with pytest.raises(ConfigError, match=named):
        resource().open()


def test_destination_timeout_reaches_the_client(monkeypatch):
    monkeypatch.setenv("GOOGLE_ACCESS_TOKEN", "token")
    assert GoogleDataManagerResource().open().client._http.timeout.read == 60  # the client's own default
    monkeypatch.setenv("RETENTION_DESTINATION_TIMEOUT_S", "3.5")
    assert GoogleDataManagerResource().open().client._http.timeout.read == 3.5
    assert GoogleDataManagerResource(timeout_seconds=7).open().client._http.timeout.read == 7


@pytest.mark.parametrize("value", ["0", "-1", "601", "soon"])
def test_absurd_destination_timeout_is_named(monkeypatch, value):
    monkeypatch.setenv("GOOGLE_ACCESS_TOKEN", "token")
    monkeypatch.setenv("RETENTION_DESTINATION_TIMEOUT_S", value)
    for resource in (
        GoogleDataManagerResource,
        MetaResource,
        CustomerIoResource,
        TikTokResource,
        PinterestResource,
    ):
        with pytest.raises(ConfigError, match="RETENTION_DESTINATION_TIMEOUT_S"):
            resource().open()


def test_region_picks_the_hosts(monkeypatch):
    seen = []
    monkeypatch.setattr(
        CustomerIoClient, "account_region", lambda self: seen.append(self) or {"region": "eu"}
    )
    monkeypatch.setenv("CUSTOMERIO_SITE_ID", "site")
    monkeypatch.setenv("CUSTOMERIO_API_KEY", "key")
    monkeypatch.setenv("CUSTOMERIO_REGION", "eu")

    connection = CustomerIoResource().open()

    assert connection.mode == "api" and connection.base_url == "https://track-eu.customer.io"
    assert seen[0].app_url == "https://api-eu.customer.io"
    monkeypatch.setenv("CUSTOMERIO_REGION", "us")
    with pytest.raises(ConfigError, match="CUSTOMERIO_REGION='us' but the workspace is in 'eu'"):
        CustomerIoResource().open()


class TestWithCredentials:
    """Credentials set and URLs pointed at a loopback sandbox: the resources behave as against the real hosts."""

    @pytest.fixture
    def sandbox(self):
        return CustomerIoSandbox(site_id="site", api_key="track-key", app_api_key="app-key")

    def test_customerio_real_mode(self, monkeypatch, server, sandbox):
        for name, value in {"CUSTOMERIO_SITE_ID": "site", "CUSTOMERIO_API_KEY": "track-key",
                            "CUSTOMERIO_APP_API_KEY": "app-key", "CUSTOMERIO_TRACK_URL": server.url,
                            "CUSTOMERIO_APP_URL": server.url}.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        connection = CustomerIoResource().open()
        assert isinstance(connection, Connection)
        assert (connection.mode, connection.base_url, connection.sandbox) == ("api", server.url, None)
        assert connection.client.create_segment("s")["id"] == 1
        assert sandbox.requests[0].path == "/api/v1/accounts/region"  # the probe

        monkeypatch.setenv("CUSTOMERIO_API_KEY", "stale-key")
        with pytest.raises(ConfigError, match="CUSTOMERIO_API_KEY") as caught:
            CustomerIoResource().open()
        assert "stale-key" not in str(caught.value)


class TestMetaWithCredentials:
    @pytest.fixture
    def sandbox(self):
        return MetaSandbox(access_token="token", ad_account_id="42")

    def test_meta_real_mode_probes_the_ad_account(self, monkeypatch, server, sandbox):
        monkeypatch.setenv("META_ACCESS_TOKEN", "token")
        monkeypatch.setenv("META_GRAPH_URL", f"{server.url}/v25.0")
        monkeypatch.setenv("META_AD_ACCOUNT_ID", "act_42")
        assert MetaResource().open().mode == "api"

        monkeypatch.setenv("META_AD_ACCOUNT_ID", "43")
        with pytest.raises(ConfigError, match="META_AD_ACCOUNT_ID"):
            MetaResource().open()


def test_resources_in_a_dagster_run(instance):
    @dg.asset
    def activated(
        customerio: CustomerIoResource,
        meta: MetaResource,
        google: GoogleDataManagerResource,
        tiktok: TikTokResource,
        pinterest: PinterestResource,
    ) -> dict:
        """Touches each destination once through its run-time connection."""
        cio = customerio.connection()
        segment = cio.client.create_segment("s")
        return {
            "cio": cio.client.segment_add(segment["id"], ["nobody"])[0].ok,
            "meta": meta.connection().client.create_audience("a") != "",
            "google": google.connection().mode,
            "tiktok": tiktok.connection().client.create_audience("a") != "",
            "pinterest": pinterest.connection().mode,
        }

    result = dg.materialize(
        [activated],
        resources={
            "customerio": CustomerIoResource(),
            "meta": MetaResource(),
            "google": GoogleDataManagerResource(),
            "tiktok": TikTokResource(),
            "pinterest": PinterestResource(),
        },
        instance=instance,
    )
    assert result.success
    assert result.output_for_node("activated") == {
        "cio": True, "meta": True, "google": "sandbox", "tiktok": True, "pinterest": "sandbox"
    }  # fmt: skip
