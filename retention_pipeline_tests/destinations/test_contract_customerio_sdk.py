"""Our Customer.io Track requests against the official `customerio` Python package, where the two overlap.

What the package (3.x) offers, read from its source: Track v1 calls (identify, track, merge_customers, …), an App
API client for transactional sends, region hosts (`Regions`), and `CustomerIO.batch(operations)`, which POSTs
`{"batch": operations}` to `https://<track host>/api/v2/batch` with HTTP Basic (site id, Track key) after turning
every datetime in it into unix seconds (a naive one read as UTC). It does not build v2 ops (the caller passes
them), split batches by size, read a 207, or call manual segments. So what can be checked is the envelope: hosts,
URL, auth, body, timestamp convention; and its Track identifier vocabulary. The ops themselves, the 500 KB / 32 KB
packing and 207 handling have no counterpart in the package and are tested against the sandbox in test_customerio.
No network: the package's requests go to a recording transport adapter, ours to the sandbox in-process.
"""

from __future__ import annotations

import json
from datetime import datetime

import customerio
import httpx
import pytest
import requests
from customerio import constants as cio_constants

from retention_pipeline.destinations.customerio.adapter import CustomerIoAdapter
from retention_pipeline.destinations.customerio.client import SEGMENT_ID_TYPES, CustomerIoClient
from retention_pipeline.destinations.customerio.resource import REGION_HOSTS
from retention_pipeline.destinations.sync import Change, SyncContext
from retention_pipeline.sandbox.customerio import CustomerIoSandbox
from retention_pipeline.segments.project import load_segments

SITE_ID, API_KEY = "site-1", "track-secret-key"
AS_OF = datetime(2026, 11, 20, 6, 30)  # naive, as the engine's as_of


class _Recorder(requests.adapters.BaseAdapter):
    """Answers `{}` to every request the package makes and keeps the prepared request instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.sent.append(request)
        response = requests.Response()
        response.status_code, response._content, response.request = 200, b"{}", request
        return response

    def close(self) -> None:
        pass


def sdk_client(region) -> tuple[customerio.CustomerIO, _Recorder]:
    sdk = customerio.CustomerIO(SITE_ID, API_KEY, region=region, retries=0)
    recorder = _Recorder()
    sdk.http.mount("https://", recorder)  # the session it built, with its auth, minus the network
    return sdk, recorder


@pytest.mark.parametrize("region", [customerio.Regions.US, customerio.Regions.EU])
def test_region_hosts_are_the_packages(region):
    assert REGION_HOSTS[region.name] == (f"https://{region.track_host}", f"https://{region.api_host}")


def test_segment_id_types_are_the_track_identifier_types():
    """The manual-segment `id_type` values are the Track API's identifier kinds, which the package lists."""
    assert set(SEGMENT_ID_TYPES) == {cio_constants.ID, cio_constants.EMAIL, cio_constants.CIOID}


@pytest.mark.parametrize("region", ["us", "eu"])
def test_batch_request_equals_the_packages(region):
    sandbox, ours = CustomerIoSandbox(site_id=SITE_ID, api_key=API_KEY, region=region), []

    def record(request: httpx.Request) -> httpx.Response:
        ours.append(request)
        return sandbox.handle(request)

    track_url, app_url = REGION_HOSTS[region]
    segment = next(s for s in load_segments() if "customerio" in s.destinations)
    payload = {
        "email": "dana@example.com",
        "tier": "gold",
        "reason": "usage fell 80%",
        "features": {"usage_7d": 3},
    }
    with (
        httpx.Client(transport=httpx.MockTransport(record)) as http,
        CustomerIoClient(track_url, app_url, SITE_ID, API_KEY, http_client=http) as client,
    ):
        CustomerIoAdapter(client, section=None, objects={}).send(
            segment,
            [Change("p1", "add", payload, "h1")],
            SyncContext("contract", "daily", "2026-11-19", AS_OF),
        )
    assert [r.status for r in sandbox.requests] == [200]
    body = json.loads(ours[0].content)
    assert [op["action"] for op in body["batch"]] == ["identify", "event"]
    identify, event = body["batch"]
    since = f"rp_{segment.name}_since"
    assert since in identify["attributes"]

    sdk, recorder = sdk_client(getattr(customerio.Regions, region.upper()))
    # Our ops with the engine's datetime where we wrote unix seconds: the package's conversion must give ours.
    sdk.batch(
        [
            {**identify, "attributes": {**identify["attributes"], since: AS_OF}},
            {**event, "timestamp": AS_OF},
        ]
    )
    (theirs,) = recorder.sent

    assert (
        (ours[0].method, str(ours[0].url))
        == (theirs.method, theirs.url)
        == ("POST", f"{track_url}/api/v2/batch")
    )
    assert ours[0].headers["authorization"] == theirs.headers["Authorization"]
    assert theirs.headers["Content-Type"] == ours[0].headers["content-type"] == "application/json"
    assert json.loads(theirs.body) == body
