"""`python -m retention_pipeline sql`: DuckDB itself refuses anything but reading the published copy."""

from __future__ import annotations

import duckdb
import pytest

from retention_pipeline.cli import main
from retention_pipeline.operations.publish import published_path


@pytest.fixture
def published(tmp_path, monkeypatch):
    """A published copy with one table; HOME moved so an extension install could only land in tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = published_path()
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA raw")
        con.execute("CREATE TABLE raw.contacts AS SELECT 'c1' AS customer_id, 'ana@example.com' AS email")
    return path


def test_a_select_still_works(published, capsys):
    assert main(["sql", "SELECT customer_id FROM raw.contacts"]) == 0
    assert "c1" in capsys.readouterr().out


def test_a_wrong_query_is_a_query_error_not_a_refusal(published, capsys):
    assert main(["sql", "SELECT nope FROM raw.contacts"]) == 1
    assert capsys.readouterr().err.startswith("query failed: ")


@pytest.mark.parametrize(
    "statement, creates",
    [
        ("ATTACH '{tmp}/other.duckdb' AS other (READ_WRITE)", "other.duckdb"),
        ("ATTACH ':memory:' AS scratch", None),
        ("COPY raw.contacts TO '{tmp}/contacts.csv'", "contacts.csv"),
        ("COPY (SELECT 1) TO '{tmp}/one.parquet' (FORMAT parquet)", "one.parquet"),
        ("EXPORT DATABASE '{tmp}/export'", "export"),
        ("INSTALL '{tmp}/fake.duckdb_extension'", "home"),
        ("LOAD '{tmp}/fake.duckdb_extension'", None),
        ("LOAD httpfs", None),
        ("SELECT * FROM read_csv('/etc/passwd')", None),
        ("SELECT * FROM glob('{tmp}/*')", None),
        ("SET enable_external_access = true", None),
        ("SET lock_configuration = false", None),
        ("CREATE TABLE raw.extra AS SELECT 1 AS x", None),
        ("DELETE FROM raw.contacts", None),
    ],
)
def test_writes_files_and_extensions_are_refused_as_read_only(
    published, tmp_path, capsys, statement, creates
):
    (tmp_path / "fake.duckdb_extension").write_bytes(b"not an extension")

    assert main(["sql", statement.format(tmp=tmp_path)]) == 1

    assert creates is None or not (tmp_path / creates).exists()
    assert capsys.readouterr().err.startswith("the sql command is read-only: ")
    with duckdb.connect(str(published), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.contacts").fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (1,)
