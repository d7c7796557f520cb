"""The analysts' copy: consistent, replaced atomically, never blocking the writer."""

import duckdb
import pytest

from retention_pipeline.config import ConfigError
from retention_pipeline.operations.publish import publish, published_path
from retention_pipeline.warehouse import DuckDBWarehouse


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
