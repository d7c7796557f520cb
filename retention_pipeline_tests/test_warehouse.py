"""warehouse.transaction: a failure DuckDB has already rolled back must surface as itself."""

from __future__ import annotations

import duckdb
import pytest

from retention_pipeline.warehouse import transaction
from retention_pipeline_tests.disk_full import file_size_limit


def test_the_original_error_surfaces_when_duckdb_already_aborted_the_transaction(tmp_path):
    path = tmp_path / "t.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (i BIGINT, s VARCHAR)")
    con.execute("CHECKPOINT")
    # The commit cannot write its rows; DuckDB then ends the transaction itself, and a plain ROLLBACK would fail
    # with "cannot rollback - no transaction is active" in place of this error.
    with (
        pytest.raises(duckdb.Error) as raised,
        file_size_limit(path.stat().st_size + 100_000),
        transaction(con),
    ):
        con.execute("INSERT INTO t SELECT range, md5(CAST(range AS VARCHAR)) FROM range(200000)")

    assert "File too large" in str(raised.value)
    assert "no transaction is active" not in str(raised.value)
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with transaction(con):  # the connection is usable again
        con.execute("INSERT INTO t VALUES (1, 'x')")
    assert con.execute("SELECT count(*) FROM t").fetchone() == (1,)
    con.close()
