"""`python -m retention_pipeline.sandbox customerio|meta|google --port 0` prints its URL and answers on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from retention_pipeline.destinations.identity import email_sha256

GRANTED = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"}


def check_customerio(url: str) -> None:
    assert httpx.get(f"{url}/api/v1/accounts/region").status_code == 401
    answer = httpx.get(f"{url}/api/v1/accounts/region", auth=("site", "key"))
    assert answer.json()["region"] == "eu"


def check_meta(url: str) -> None:
    assert url.endswith("/v25.0")  # ready to paste into META_GRAPH_URL
    created = httpx.post(f"{url}/act_1234567890/customaudiences", headers={"Authorization": "Bearer t"},
                         json={"name": "a", "subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY"})  # fmt: skip
    assert created.status_code == 200 and created.json()["id"]


def check_google(url: str) -> None:
    body = {
        "destinations": [{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1"}, "productDestinationId": "9"}],
        "audienceMembers": [{"userData": {"userIdentifiers": [{"emailAddress": email_sha256("a@b.co")}]}, "consent": GRANTED}],
        "encoding": "HEX",
        "termsOfService": {"customerMatchTermsOfServiceStatus": "ACCEPTED"},
    }  # fmt: skip
    answer = httpx.post(f"{url}/v1/audienceMembers:ingest", json=body, headers={"Authorization": "Bearer t"})
    assert answer.status_code == 200 and answer.json()["requestId"]


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["customerio", "--region", "eu"], check_customerio),
        (["meta"], check_meta),
        (["google"], check_google),
    ],
)
def test_subcommand_serves_until_signalled(args, check):
    process = subprocess.Popen(
        [sys.executable, "-m", "retention_pipeline.sandbox", *args, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url or process.stderr.read()
        check(url)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
