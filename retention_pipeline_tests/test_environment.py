"""Targets: which source and destination accounts a run resolves to, and the file's memory of them."""

import duckdb
import pytest

from retention_pipeline.cli import main
from retention_pipeline.config import ConfigError
from retention_pipeline.destinations.meta.resource import meta_target
from retention_pipeline.environment import (
    current_bindings,
    is_new_file,
    metronome_target,
    resolve,
    systems,
    verify_bindings,
)

SYSTEMS = systems()  # the source and every registered destination


def test_nothing_set_is_the_sandbox_everywhere():
    assert SYSTEMS == ("metronome", "customerio", "meta", "google", "tiktok", "pinterest")
    assert [t.identity for t in resolve(SYSTEMS)] == ["sandbox"] * 6


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
        assert len(notes) == 6  # one per system
        assert current_bindings(con) == dict.fromkeys(SYSTEMS, "sandbox")
        assert verify_bindings(con, resolve(SYSTEMS), tmp_path / "x.duckdb") == []


def test_a_lost_secret_fails_naming_the_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("META_ACCESS_TOKEN", "t")
    monkeypatch.setenv("META_AD_ACCOUNT_ID", "42")
    monkeypatch.setenv("RETENTION_FIRST_RUN", "1")  # a new file meeting a real destination
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
        monkeypatch.setenv("RETENTION_ALLOW_TARGET_CHANGE", "snapchat")  # not a system (tiktok is one now)
        with pytest.raises(ConfigError, match="RETENTION_ALLOW_TARGET_CHANGE='snapchat'"):
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


def _real_meta(monkeypatch):
    monkeypatch.setenv("META_ACCESS_TOKEN", "t")
    monkeypatch.setenv("META_AD_ACCOUNT_ID", "42")


def test_a_new_file_meeting_a_real_destination_stops_and_asks_for_the_first_run_flag(tmp_path, monkeypatch):
    _real_meta(monkeypatch)
    path = tmp_path / "typo" / ".." / "retention.duckdb"
    with _con(tmp_path) as con:
        with pytest.raises(ConfigError) as error:
            verify_bindings(con, resolve(SYSTEMS), path)
        message = str(error.value)
        assert f"RETENTION_DUCKDB_PATH={str(path)!r}" in message and str(path.resolve()) in message
        assert "Meta 'act_42 @ graph.facebook.com/v25.0'" in message
        assert "retention run --first-run" in message and "RETENTION_FIRST_RUN=1" in message
        assert current_bindings(con) == {}  # nothing recorded: the next attempt is refused the same way

        monkeypatch.setenv("RETENTION_FIRST_RUN", "1")
        notes = verify_bindings(con, resolve(SYSTEMS), path)
        assert any("first run" in note for note in notes)
        assert current_bindings(con)["meta"] == "act_42 @ graph.facebook.com/v25.0"

        # From now on the file is not new: no flag needed, and a flag left set is pointed out.
        assert not is_new_file(con)
        assert any("unset it" in note for note in verify_bindings(con, resolve(SYSTEMS), path))
        monkeypatch.delenv("RETENTION_FIRST_RUN")
        assert verify_bindings(con, resolve(SYSTEMS), path) == []


def test_sandbox_destinations_never_need_the_first_run_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("METRONOME_BEARER_TOKEN", "t")  # a real source alone sends nothing anywhere
    with _con(tmp_path) as con:
        assert is_new_file(con)
        assert len(verify_bindings(con, resolve(SYSTEMS), tmp_path / "x.duckdb")) == 6  # one per system


def test_a_file_with_sync_state_but_no_bindings_is_not_new(tmp_path, monkeypatch):
    """Files written before targets were recorded hold acknowledged state: they are not a fresh start."""
    _real_meta(monkeypatch)
    with _con(tmp_path) as con:
        con.execute("CREATE SCHEMA sync; CREATE TABLE sync.destination_state (segment VARCHAR)")
        assert is_new_file(con)
        con.execute("INSERT INTO sync.destination_state VALUES ('usage_drop_wow')")
        assert not is_new_file(con)
        assert verify_bindings(con, resolve(["meta"]), tmp_path / "x.duckdb")


def test_a_metronome_binding_alone_does_not_make_the_file_known_to_destinations(tmp_path, monkeypatch):
    with _con(tmp_path) as con:
        verify_bindings(con, resolve(["metronome"]), tmp_path / "x.duckdb")  # an extraction-only run
        _real_meta(monkeypatch)
        with pytest.raises(ConfigError, match="--first-run"):
            verify_bindings(con, resolve(["meta"]), tmp_path / "x.duckdb")


def test_first_run_flag_values_are_validated(tmp_path, monkeypatch):
    _real_meta(monkeypatch)
    monkeypatch.setenv("RETENTION_FIRST_RUN", "maybe")
    with _con(tmp_path) as con, pytest.raises(ConfigError, match="RETENTION_FIRST_RUN='maybe'"):
        verify_bindings(con, resolve(SYSTEMS), tmp_path / "x.duckdb")
