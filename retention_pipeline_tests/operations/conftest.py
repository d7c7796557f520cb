"""Each operations test gets its own webhook inbox and no webhook settings from the outer environment."""

from __future__ import annotations

import pytest

WEBHOOK_ENV = ["METRONOME_WEBHOOK_SECRET", "RETENTION_WEBHOOK_INBOX", "RETENTION_WEBHOOK_MAX_BODY_BYTES"]


@pytest.fixture(autouse=True)
def inbox_path(monkeypatch, tmp_path):
    for name in WEBHOOK_ENV:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "webhook_inbox.sqlite3"
    monkeypatch.setenv("RETENTION_WEBHOOK_INBOX", str(path))
    return path
