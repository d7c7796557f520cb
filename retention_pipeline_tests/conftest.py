"""Shared fixtures: a small pinned sandbox tenant, its loopback server, and an isolated environment per test."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from retention_pipeline.config import SETTINGS
from retention_pipeline.source.sandbox.server import MetronomeSandbox
from retention_pipeline.source.sandbox.tenant import TenantSpec, build_tenant

NOW = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
SMALL = TenantSpec(seed=7, customers=40, history_days=40, now=NOW)

# Every variable the pipeline reads (config.SETTINGS); each test starts with none of them set.
PIPELINE_ENV = [*SETTINGS, "DAGSTER_HOME"]


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    for name in PIPELINE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RETENTION_DUCKDB_PATH", str(tmp_path / "retention.duckdb"))
    monkeypatch.setenv("RETENTION_EXPORT_DIR", str(tmp_path / "exports"))
    monkeypatch.setenv("RETENTION_WEBHOOK_INBOX", str(tmp_path / "inbox.sqlite3"))
    return tmp_path


@pytest.fixture
def tenant():
    return build_tenant(SMALL)


@pytest.fixture
def sandbox(tenant):
    return MetronomeSandbox(tenant, usage_page_size=700)


@pytest.fixture
def loopback(sandbox, monkeypatch):
    """The sandbox on a real loopback port, with the pipeline pointed at it as if it were the real API."""
    server = sandbox.serve()
    monkeypatch.setenv("METRONOME_BEARER_TOKEN", "test-token")
    monkeypatch.setenv("METRONOME_API_URL", server.url)
    yield server
    server.close()


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst
