"""`make run`'s code path end to end: the embedded sandbox, both jobs, a summary, non-empty raw tables."""

from __future__ import annotations

import duckdb

from retention_pipeline.cli import main
from retention_pipeline.warehouse import resolve_duckdb_path


def test_run_on_the_embedded_sandbox_fills_every_raw_table(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    monkeypatch.setenv("RETENTION_SANDBOX_NOW", "2026-11-20T10:30:00Z")
    monkeypatch.setenv("RETENTION_SANDBOX_CUSTOMERS", "40")
    monkeypatch.setenv("RETENTION_HISTORY_DAYS", "30")
    monkeypatch.setenv("RETENTION_HOURLY_HISTORY_DAYS", "2")

    assert main(["run"]) == 0

    out = capsys.readouterr().out
    assert "daily_retention 2026-11-19" in out and "hourly_retention 2026-11-20-09:00" in out
    assert str(resolve_duckdb_path().resolve()) in out
    with duckdb.connect(str(resolve_duckdb_path()), read_only=True) as con:
        for table in ["metronome_customers", "metronome_billable_metrics", "metronome_contracts",
                      "metronome_invoices", "metronome_balances", "contacts"]:  # fmt: skip
            assert con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0] > 0, table
        windows = dict(
            con.execute("SELECT window_size, count(*) FROM raw.metronome_usage GROUP BY 1").fetchall()
        )
        assert windows["DAY"] > 0 and windows["HOUR"] > 0
