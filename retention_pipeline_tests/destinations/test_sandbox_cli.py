"""`python -m retention_pipeline.sandbox customerio|meta|google|tiktok|pinterest --port 0` prints its URL and answers
on it; tiktok and pinterest also print the variables that point the pipeline at it."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from contextlib import contextmanager

import httpx
import pytest

from retention_pipeline.config import ConfigError
from retention_pipeline.destinations.identity import email_sha256
from retention_pipeline.destinations.pinterest.resource import PinterestResource
from retention_pipeline.destinations.tiktok.resource import TikTokResource

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


def check_tiktok(url: str) -> None:
    assert url.endswith("/open_api/v1.3")  # ready to paste into TIKTOK_API_URL
    answer = httpx.get(f"{url}/dmp/custom_audience/list/", params={"advertiser_id": "7000000000000000001",
                       "page_size": 1}, headers={"Access-Token": "t"})  # fmt: skip
    assert answer.status_code == 200 and answer.json()["code"] == 0


def check_pinterest(url: str) -> None:
    assert url.endswith("/v5")  # ready to paste into PINTEREST_API_URL
    answer = httpx.get(f"{url}/ad_accounts/549756359984", headers={"Authorization": "Bearer t"})
    assert answer.status_code == 200 and answer.json()["id"] == "549756359984"


@contextmanager
def serving(*args: str):
    """The subcommand on a free loopback port: yields (its first stdout line, the process); stops it with SIGTERM
    and requires a clean exit."""
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
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def exports(process, count: int) -> dict[str, str]:
    """The `export NAME=value` lines printed after the URL, as {NAME: value} (shell-unquoted)."""
    found = {}
    for _ in range(count):
        line = process.stdout.readline().strip()
        assert line.startswith("export "), line
        name, _, value = line.removeprefix("export ").partition("=")
        (found[name],) = shlex.split(value)
    return found


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["customerio", "--region", "eu"], check_customerio),
        (["meta"], check_meta),
        (["google"], check_google),
        (["tiktok"], check_tiktok),
        (["pinterest"], check_pinterest),
    ],
)
def test_subcommand_serves_until_signalled(args, check):
    with serving(*args) as (url, _):
        check(url)


@pytest.mark.parametrize(
    ("system", "resource", "names"),
    [
        ("tiktok", TikTokResource, ("TIKTOK_API_URL", "TIKTOK_ACCESS_TOKEN", "TIKTOK_ADVERTISER_ID")),
        ("pinterest", PinterestResource, ("PINTEREST_API_URL", "PINTEREST_ACCESS_TOKEN", "PINTEREST_AD_ACCOUNT_ID")),
    ],
)  # fmt: skip
def test_printed_exports_point_the_pipeline_at_the_sandbox(monkeypatch, system, resource, names):
    """The printed variables are all the pipeline needs: its resource opens the API mode (probing the account with
    the printed credentials) against the sandbox, and what it sends lands there."""
    with serving(system, "--access-token", "s3cret") as (url, process):
        printed = exports(process, len(names))
        assert tuple(printed) == names and printed[names[0]] == url and printed[names[1]] == "s3cret"
        for name, value in printed.items():
            monkeypatch.setenv(name, value)
        connection = resource().open()
        try:
            assert (connection.mode, connection.base_url, connection.sandbox) == ("api", url, None)
            if system == "tiktok":
                audience = connection.client.create_audience("retention audience 1")
                assert connection.client.audience(audience)
            else:
                created = connection.client.create_customer_list(
                    "retention audience 1", [email_sha256("a@b.co")]
                )
                assert connection.client.customer_list(created["id"])["id"] == created["id"]
        finally:
            connection.client.close()

        monkeypatch.setenv(names[1], "wrong-token")  # the sandbox requires the token it printed
        with pytest.raises(ConfigError, match=names[1]):
            resource().open()


@pytest.mark.parametrize("system", ["tiktok", "pinterest"])
def test_without_a_token_the_printed_one_is_accepted(system):
    with serving(system) as (_, process):
        printed = exports(process, 3)
    assert printed[f"{system.upper()}_ACCESS_TOKEN"] == "sandbox-token"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["tiktok", "--advertiser-id", "adv-1"], "--advertiser-id 'adv-1' must be numeric"),
        (["pinterest", "--ad-account-id", "act_1"], "--ad-account-id 'act_1' must be numeric"),
        (["pinterest", "--requests-per-second", "0"], "requests_per_second must be positive"),
    ],
)
def test_bad_flags_are_usage_errors(args, named):
    done = subprocess.run(
        [sys.executable, "-m", "retention_pipeline.sandbox", *args, "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and named in done.stderr and not done.stdout
