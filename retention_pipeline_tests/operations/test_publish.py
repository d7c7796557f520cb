"""The analysts' copy: consistent, replaced atomically, never blocking the writer, private, ending clean on a full
disk, and with RETENTION_PUBLISH_CONTACTS=hashed free of emails and phones."""

import errno
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys

import duckdb
import pytest

from retention_pipeline.config import ConfigError
from retention_pipeline.definitions import defs
from retention_pipeline.operations.publish import (
    publish,
    published_mode,
    published_path,
    publishes_hashed_contacts,
)
from retention_pipeline.warehouse import DuckDBWarehouse, transaction
from retention_pipeline_tests.disk_full import file_size_limit


def test_publish_replaces_the_copy_while_a_reader_holds_the_old_one(tmp_path, monkeypatch):
    monkeypatch.setenv("RETENTION_DUCKDB_PATH", str(tmp_path / "live.duckdb"))
    warehouse = DuckDBWarehouse()
    with warehouse.connect() as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS version")
    target = published_path()
    publish(warehouse, target)

    reader = duckdb.connect(str(target), read_only=True)  # an analyst session stays open
    with warehouse.connect() as con:  # the writer is not blocked by the reader
        con.execute("UPDATE t SET version = 2")
    publish(warehouse, target)

    assert reader.execute("SELECT version FROM t").fetchone() == (1,)  # the old copy, consistent
    reader.close()
    with duckdb.connect(str(target), read_only=True) as fresh:
        assert fresh.execute("SELECT version FROM t").fetchone() == (2,)
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_published_path_may_not_be_the_live_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RETENTION_DUCKDB_PATH", str(tmp_path / "live.duckdb"))
    monkeypatch.setenv("RETENTION_PUBLISHED_PATH", str(tmp_path / "live.duckdb"))
    with pytest.raises(ConfigError, match="RETENTION_PUBLISHED_PATH"):
        published_path()


def _live(tmp_path, monkeypatch) -> DuckDBWarehouse:
    monkeypatch.setenv("RETENTION_DUCKDB_PATH", str(tmp_path / "live.duckdb"))
    warehouse = DuckDBWarehouse()
    with warehouse.connect() as con:
        con.execute("CREATE TABLE t AS SELECT range AS i FROM range(50000)")
    return warehouse


def test_a_full_disk_mid_copy_leaves_nothing_behind_and_reports_itself(tmp_path, monkeypatch):
    warehouse = _live(tmp_path, monkeypatch)
    target = published_path()
    publish(warehouse, target)
    before = target.read_bytes()
    with warehouse.connect() as con:
        con.execute("INSERT INTO t VALUES (-1)")

    def full_disk(source, destination):
        with open(source, "rb") as src, open(destination, "wb") as dst:
            dst.write(src.read(4096))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "copyfile", full_disk)
        for _ in range(2):  # every attempt used to leave another temp file
            with pytest.raises(OSError) as raised:
                publish(warehouse, target)
            assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
            assert target.read_bytes() == before  # the analysts keep the last good copy
            assert raised.value.errno == errno.ENOSPC
            assert "RETENTION_PUBLISHED_PATH" in " ".join(raised.value.__notes__)
            assert str(target) in " ".join(raised.value.__notes__)

    publish(warehouse, target)  # space is back: nothing of the failures is in the way
    with duckdb.connect(str(target), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t WHERE i = -1").fetchone() == (1,)


def test_a_failed_checkpoint_does_not_poison_later_runs_in_the_process(tmp_path, monkeypatch):
    warehouse = _live(tmp_path, monkeypatch)
    with warehouse.connect() as con:
        con.execute("CHECKPOINT")
        con.execute("PRAGMA disable_checkpoint_on_shutdown")  # leave the next rows in the WAL
        con.execute("INSERT INTO t SELECT range FROM range(100000)")
    live = warehouse.resolved_path()
    target = published_path()

    # `raised` keeps the traceback alive, as Dagster's failure handling does.
    with pytest.raises(duckdb.Error) as raised, file_size_limit(live.stat().st_size):
        publish(warehouse, target)

    assert "File too large" in str(raised.value)
    assert not target.exists() and not list(tmp_path.glob(".*.tmp"))
    with warehouse.connect() as con, transaction(con):  # the next run writes …
        con.execute("INSERT INTO t VALUES (-1)")
    publish(warehouse, target)  # … and publishes
    with duckdb.connect(str(target), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (150001,)
    assert "RETENTION_DUCKDB_PATH" in " ".join(raised.value.__notes__)


def test_the_copy_gets_the_configured_mode_before_it_is_visible(tmp_path, monkeypatch):
    warehouse = _live(tmp_path, monkeypatch)
    target = published_path()
    seen = []
    rename = os.replace

    def spy(source, destination):
        folder = os.path.dirname(source)
        seen.append((stat.S_IMODE(os.stat(source).st_mode), stat.S_IMODE(os.stat(folder).st_mode)))
        rename(source, destination)

    monkeypatch.setattr(os, "replace", spy)
    old_umask = os.umask(0)  # files would be created world-readable and writable
    try:
        publish(warehouse, target)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        publish(warehouse, target, mode=published_mode("0640"))
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
    finally:
        os.umask(old_umask)
    # (file, folder) at the rename: the file already has its final mode, its temp folder is private
    assert seen == [(0o600, 0o700), (0o640, 0o700)]


@pytest.mark.parametrize(
    "name, value",
    [("RETENTION_PUBLISHED_MODE", "rw-r-----"), ("RETENTION_PUBLISHED_MODE", "0200"),
     ("RETENTION_PUBLISHED_MODE", "1777"), ("RETENTION_PUBLISH_CONTACTS", "encrypted")],
)  # fmt: skip
def test_bad_publish_settings_fail_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    read = {
        "RETENTION_PUBLISHED_MODE": published_mode,
        "RETENTION_PUBLISH_CONTACTS": publishes_hashed_contacts,
    }
    with pytest.raises(ConfigError, match=name):
        read[name]()


def _exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_temp_folders_of_dead_publishes_are_removed(tmp_path, monkeypatch):
    warehouse = _live(tmp_path, monkeypatch)
    target = published_path()
    abandoned_folder = tmp_path / f".{target.name}.{_exited_pid()}.tmp"  # a publish killed with -9
    abandoned_folder.mkdir()
    (abandoned_folder / "snapshot.duckdb").write_bytes(b"x" * 1000)
    abandoned_file = tmp_path / f".{target.name}.{_exited_pid()}.tmp"  # the temp file of earlier versions
    abandoned_file.write_bytes(b"x")
    running = tmp_path / f".{target.name}.{os.getppid()}.tmp"  # a publish still at work in another process
    running.mkdir()

    publish(warehouse, target)

    assert not abandoned_folder.exists() and not abandoned_file.exists()
    assert running.exists()


def _identifiers(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Every email and phone of the working file, as given and normalized, and the email-shaped ingest aliases
    (not the sandbox's junk like a phone of "12", which matches half the ids)."""
    contacts = con.execute("SELECT email, email_normalized, phone, phone_e164 FROM raw.contacts").fetchall()
    aliases = con.execute("SELECT unnest(ingest_aliases) FROM raw.metronome_customers").fetchall()
    phones_and_emails = {v.strip() for row in contacts for v in row if v}
    return {v for v in phones_and_emails if "@" in v or len(re.sub(r"\D", "", v)) >= 7} | {
        a for (a,) in aliases if "@" in a
    }


def _text_holding(path, identifiers: set[str]) -> list[str]:
    """schema.table.column of every text-bearing column (VARCHAR, JSON, lists, structs) with an identifier or an
    email-shaped value in it."""
    email = re.compile(r"[\w.+'-]+@[\w-]+\.[\w.-]+")
    found = []
    with duckdb.connect(str(path), read_only=True) as con:
        columns = con.execute(
            "SELECT schema_name, table_name, column_name FROM duckdb_columns() "
            "WHERE data_type LIKE '%VARCHAR%' OR data_type LIKE '%JSON%'"
        ).fetchall()
        for schema, table, column in columns:
            values = con.execute(f'SELECT CAST("{column}" AS VARCHAR) FROM "{schema}"."{table}"').fetchall()
            text = "\n".join(v for (v,) in values if v)
            if email.search(text) or any(i in text for i in identifiers):
                found.append(f"{schema}.{table}.{column}")
    return found


def test_hashed_contacts_leave_no_email_or_phone_in_the_published_copy(tmp_path, monkeypatch, instance):
    for name, value in {"RETENTION_SANDBOX_NOW": "2026-11-20T10:30:00Z", "RETENTION_SANDBOX_CUSTOMERS": "40",
                        "RETENTION_HISTORY_DAYS": "30", "RETENTION_PUBLISH_CONTACTS": "hashed"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    result = defs.resolve_job_def("daily_retention").execute_in_process(
        partition_key="2026-11-19", instance=instance
    )
    assert result.success
    warehouse = DuckDBWarehouse()
    with warehouse.connect() as con:
        identifiers = _identifiers(con)
        normalized = dict(con.execute("SELECT source_row, email_normalized FROM raw.contacts").fetchall())
        people = con.execute("SELECT count(*) FROM raw.contacts").fetchone()[0]
    hashed = published_path()
    raw = tmp_path / "raw_copy.duckdb"
    publish(warehouse, raw)  # the default
    in_raw = set(_text_holding(raw, identifiers))  # the scan finds them where they are
    assert {"raw.contacts.email", "raw.contacts.phone", "raw.metronome_customers.ingest_aliases"} <= in_raw

    assert _text_holding(hashed, identifiers) == []
    data = hashed.read_bytes()  # nothing left in free blocks either
    assert not [i for i in identifiers if i.encode() in data]
    with duckdb.connect(str(hashed), read_only=True) as con:
        stored = dict(con.execute("SELECT source_row, email_normalized FROM raw.contacts").fetchall())
        assert con.execute("SELECT count(*) FROM raw.contacts").fetchone()[0] == people
    # the hash Meta's EMAIL key uses, so analysts can match audiences
    assert stored == {
        row: email and hashlib.sha256(email.encode()).hexdigest() for row, email in normalized.items()
    }
