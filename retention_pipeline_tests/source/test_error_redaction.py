"""Metronome errors as the run's failure message and the event log carry them: no echoed email, phone or URL
credentials, and no chained SDK exception that would carry the unredacted body."""

from __future__ import annotations

import sys

import metronome
import pytest
from dagster._serdes import serialize_value
from dagster._utils.error import serializable_error_info_from_exc_info

from retention_pipeline.config import ConfigError
from retention_pipeline.source import extract
from retention_pipeline.source.metronome import MetronomeResource

SECRETS = ("ann@example.com", "415 555 2671", "hunter2")


def as_event_log_stores_it(raises) -> tuple[BaseException, str]:
    """The exception and its serialized form, the way Dagster writes a step failure (causes included)."""
    try:
        raises()
    except Exception as error:  # noqa: BLE001 - whatever it is, its serialized form is what is checked
        return error, serialize_value(serializable_error_info_from_exc_info(sys.exc_info()))
    pytest.fail("expected an error")


def test_an_error_body_that_echoes_pii_is_redacted_and_not_chained(sandbox, loopback):
    echo = "alias ann@example.com (+1 415 555 2671) is taken; see https://ops:hunter2@status.example/x"
    sandbox.faults.add(r"/invoices$", 400, body={"message": echo})
    client = metronome.Metronome(bearer_token="t", base_url=loopback.url, max_retries=0)

    error, stored = as_event_log_stores_it(
        lambda: extract.fetch_per_customer(client, "invoices", ["c1"], concurrency=1, log=print)
    )

    assert isinstance(error, extract.ExtractionError)
    assert str(error).endswith("HTTP 400: alias <email> (<phone>) is taken; see https://status.example/x")
    assert error.__cause__ is None and error.__suppress_context__
    assert [s for s in SECRETS if s in stored] == []


@pytest.mark.parametrize("reachable", [True, False])
def test_url_credentials_never_reach_the_message(loopback, monkeypatch, reachable):
    host = loopback.url.removeprefix("http://") if reachable else "127.0.0.1:9"
    monkeypatch.setenv("METRONOME_API_URL", f"http://ops:hunter2@{host}")

    error, stored = as_event_log_stores_it(lambda: MetronomeResource().open())

    assert isinstance(error, ConfigError) and f"http://{host}" in str(error)
    assert "hunter2" not in stored
