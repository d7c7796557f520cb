"""Targets: which source and destination accounts a run resolves to, and the file's memory of them."""

import duckdb
import pytest

from retention_pipeline.cli import main
from retention_pipeline.config import ConfigError
from retention_pipeline.environment import (
    SYSTEMS,
    current_bindings,
    meta_target,
    metronome_target,
    resolve,
    verify_bindings,
)


def test_nothing_set_is_the_sandbox_everywhere():
    assert [t.identity for t in resolve(SYSTEMS)] == ["sandbox"] * 4


def test_credentials_resolve_to_the_account_they_reach(monkeypatch):
    monkeypatch.setenv("META_ACCESS_TOKEN", "secret-token")
    monkeypatch.setenv("META_AD_ACCOUNT_ID", "act_42")
    target = meta_target()
    assert target.identity == "act_42 @ graph.facebook.com/v25.0"
    assert "secret-token" not in target.identity and "secret-token" not in target.describe()


def test_production_makes_a_missing_credential_an_error_naming_it(monkeypatch):
    monkeypatch.setenv("RETENTION_ENV", "production")
    with pytest.raises(ConfigError, match="METRONOME_BEARER_TOKEN"):
        metronome_target()
    with pytest.raises(ConfigError, match="META_ACCESS_TOKEN and META_AD_ACCOUNT_ID"):
        meta_target()
    monkeypatch.setenv("RETENTION_ENV", "staging")
    with pytest.raises(ConfigError, match="RETENTION_ENV='staging'"):
        metronome_target()


def test_half_a_credential_never_falls_back_to_the_sandbox(monkeypatch):
    monkeypatch.setenv("META_ACCESS_TOKEN", "t")
    with pytest.raises(ConfigError, match="META_AD_ACCOUNT_ID must be set too"):
        meta_target()


def test_a_url_with_embedded_credentials_is_refused_without_echoing_them(monkeypatch):
    monkeypatch.setenv("METRONOME_BEARER_TOKEN", "t")
    monkeypatch.setenv("METRONOME_API_URL", "https://user:hunter2@api.metronome.com")
    with pytest.raises(ConfigError, match="METRONOME_API_URL") as error:
        metronome_target()
    assert "hunter2" not in str(error.value)


def _con(tmp_path):
    return duckdb.connect(str(tmp_path / "bindings.duckdb"))


def test_first_use_is_recorded_and_the_same_targets_pass(tmp_path):
    with _con(tmp_path) as con:
        notes = verify_bindings(con, resolve(SYSTEMS), tmp_path / "x.duckdb")
        assert len(notes) == 4
        assert current_bindings(con) == dict.fromkeys(SYSTEMS, "sandbox")
        assert verify_bindings(con, resolve(SYSTEMS), tmp_path / "x.duckdb") == []


def test_a_lost_secret_fails_naming_the_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("META_ACCESS_TOKEN", "t")
    monkeypatch.setenv("META_AD_ACCOUNT_ID", "42")
    with _con(tmp_path) as con:
        verify_bindings(con, resolve(SYSTEMS), "x.duckdb")
        monkeypatch.delenv("META_ACCESS_TOKEN")
        monkeypatch.delenv("META_AD_ACCOUNT_ID")
        with pytest.raises(ConfigError) as error:
            verify_bindings(con, resolve(SYSTEMS), "x.duckdb")
        message = str(error.value)
        assert "'act_42 @ graph.facebook.com/v25.0'" in message and "'sandbox'" in message
        assert "META_ACCESS_TOKEN and META_AD_ACCOUNT_ID are unset" in message
        assert "RETENTION_ALLOW_TARGET_CHANGE=meta" in message
        assert current_bindings(con)["meta"] == "act_42 @ graph.facebook.com/v25.0"  # nothing recorded


def test_an_allowed_switch_is_recorded_with_its_history(tmp_path, monkeypatch):
    with _con(tmp_path) as con:
        verify_bindings(con, resolve(SYSTEMS), "x.duckdb")
        monkeypatch.setenv("GOOGLE_ACCESS_TOKEN", "t")
        monkeypatch.setenv("RETENTION_ALLOW_TARGET_CHANGE", "google")
        (note,) = verify_bindings(con, resolve(SYSTEMS), "x.duckdb")
        assert "switched from 'sandbox' to 'datamanager.googleapis.com'" in note
        rows = con.execute(
            "SELECT identity, replaced_at IS NOT NULL FROM pipeline.bindings WHERE system = 'google' ORDER BY bound_at"
        ).fetchall()
        assert rows == [("sandbox", True), ("datamanager.googleapis.com", False)]
        monkeypatch.setenv("RETENTION_ALLOW_TARGET_CHANGE", "tiktok")
        with pytest.raises(ConfigError, match="RETENTION_ALLOW_TARGET_CHANGE='tiktok'"):
            verify_bindings(con, resolve(SYSTEMS), "x.duckdb")


def test_make_run_in_production_with_nothing_set_stops_before_running(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("RETENTION_ENV", "production")
    assert main(["run"]) == 2
    assert "METRONOME_BEARER_TOKEN" in capsys.readouterr().err
    assert (
        not (tmp_path / "retention.duckdb").exists()
        or not duckdb.connect(str(tmp_path / "retention.duckdb"), read_only=True)
        .execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw'")
        .fetchone()[0]
    )
