"""`python -m retention_pipeline sql`: DuckDB itself refuses anything but reading the published copy, and the output
shows every column and value in full as a table, CSV, JSON or Markdown."""

from __future__ import annotations

import csv
import decimal
import io
import json
import os
import subprocess
import sys

import duckdb
import pytest

from retention_pipeline.cli import main
from retention_pipeline.cli.sql import database_path
from retention_pipeline.operations.publish import published_path
from retention_pipeline.warehouse import resolve_duckdb_path


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


# --- Output: every column and every value in full, in four formats ------------------------------------------------

LONG_ID = "cus_" + "0123456789abcdef" * 8  # 132 characters: DuckDB's own renderer would cut it with …
WIDE = ", ".join(
    f"'{LONG_ID}' AS column_{i:02d}" for i in range(30)
)  # 30 wide columns: DuckDB would elide most


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["sql", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def typed(published):
    """A second table with awkward values: NULLs, pipes, newlines, quotes, decimals, timestamps, JSON, lists."""
    with duckdb.connect(str(published)) as con:
        con.execute(
            """
            CREATE TABLE raw.awkward AS SELECT * FROM (VALUES
                (1, 'plain', 12.50::DECIMAL(18,2), TIMESTAMP '2026-11-20 10:00:00', '{"a": [1, 2]}'::JSON,
                 ['x', 'y'], true, 0.1::DOUBLE),
                (2, 'pipe | and "quote", comma', 12345678901234567.89::DECIMAL(38,2), NULL, NULL, [], false, NULL),
                (3, E'two\\nlines', NULL, TIMESTAMP '2026-01-01 00:00:00.123456', '"s"'::JSON, NULL, NULL, 1e300)
            ) AS t(n, label, amount, seen_at, doc, tags, flag, ratio)
            """
        )
    return published


def test_the_table_format_prints_every_column_and_full_values(published, capsys):
    code, out, err = run(capsys, f"SELECT {WIDE}")

    assert code == 0 and err == ""
    header, rule, row, count = out.splitlines()
    assert header.split() == [f"column_{i:02d}" for i in range(30)]
    assert row.split() == [LONG_ID] * 30
    assert set(rule.replace(" ", "")) == {"-"} and count == "(1 row)"
    assert "…" not in out


def test_the_table_format_aligns_numbers_right_and_spells_out_null(typed, capsys):
    code, out, _ = run(capsys, "SELECT n, label, amount FROM raw.awkward ORDER BY n")

    lines = out.splitlines()
    assert code == 0 and lines[-1] == "(3 rows)"
    width = len(lines[1].split()[2])
    assert [line[-width:] for line in lines[2:5]] == [
        f"{v:>{width}}" for v in ("12.50", "12345678901234567.89", "NULL")
    ]
    assert "two\\nlines" in lines[4]  # a value never breaks its row


def test_csv_is_rfc_4180_with_a_header_and_reads_back_exactly(typed, capsys):
    code, out, _ = run(
        capsys, "--format", "csv", "SELECT n, label, amount, seen_at, flag FROM raw.awkward ORDER BY n"
    )

    assert code == 0 and out.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(out, newline="")))
    assert rows == [
        ["n", "label", "amount", "seen_at", "flag"],
        ["1", "plain", "12.50", "2026-11-20 10:00:00", "true"],
        ["2", 'pipe | and "quote", comma', "12345678901234567.89", "", "false"],
        ["3", "two\nlines", "", "2026-01-01 00:00:00.123456", ""],
    ]


def test_json_is_an_array_of_objects_with_iso_timestamps_exact_decimals_and_embedded_json(typed, capsys):
    code, out, _ = run(capsys, "--format", "json", "SELECT * FROM raw.awkward ORDER BY n")

    assert code == 0
    rows = json.loads(out, parse_float=decimal.Decimal)
    assert rows[0] == {
        "n": 1, "label": "plain", "amount": decimal.Decimal("12.50"), "seen_at": "2026-11-20T10:00:00",
        "doc": {"a": [1, 2]}, "tags": ["x", "y"], "flag": True, "ratio": decimal.Decimal("0.1"),
    }  # fmt: skip
    assert rows[1]["amount"] == decimal.Decimal("12345678901234567.89")  # not rounded through a float
    assert (rows[1]["seen_at"], rows[1]["doc"], rows[1]["tags"], rows[1]["ratio"]) == (None, None, [], None)
    assert (rows[2]["label"], rows[2]["seen_at"], rows[2]["doc"]) == (
        "two\nlines",
        "2026-01-01T00:00:00.123456",
        "s",
    )
    assert float(rows[2]["ratio"]) == 1e300


def test_json_of_no_rows_is_an_empty_array_and_repeated_names_stay_apart(published, capsys):
    assert json.loads(run(capsys, "--format", "json", "SELECT 1 AS a WHERE false")[1]) == []
    assert json.loads(run(capsys, "--format", "json", "SELECT 1 AS a, 2 AS a")[1]) == [{"a": 1, "a_2": 2}]


def test_markdown_is_a_github_table_with_pipes_and_line_breaks_escaped(typed, capsys):
    code, out, _ = run(capsys, "--format", "markdown", "SELECT n, label, amount FROM raw.awkward ORDER BY n")

    assert code == 0
    assert out.splitlines() == [
        "| n | label | amount |",
        "|---:|---|---:|",
        "| 1 | plain | 12.50 |",
        '| 2 | pipe \\| and "quote", comma | 12345678901234567.89 |',
        "| 3 | two<br>lines | NULL |",
    ]


@pytest.mark.parametrize(
    "fmt, argv, shown",
    [
        ("table", [], 1000),
        ("markdown", [], 1000),
        ("csv", [], 2500),
        ("json", [], 2500),
        ("table", ["--max-rows", "7"], 7),
        ("json", ["--max-rows", "7"], 7),
        ("table", ["--max-rows", "0"], 2500),
    ],
)
def test_max_rows_defaults_and_truncation_is_announced_on_stderr(published, capsys, fmt, argv, shown):
    code, out, err = run(capsys, "--format", fmt, *argv, "SELECT range AS i FROM range(2500)")

    assert code == 0
    if fmt == "json":
        assert [r["i"] for r in json.loads(out)] == list(range(shown))
    else:
        body = out.splitlines()[2 if fmt in ("table", "markdown") else 1 :]
        assert len(body) == shown + (1 if fmt == "table" else 0)  # the table's row count line
    assert err == ("" if shown == 2500 else f"({shown} of 2500 rows shown; use --max-rows)\n")


def test_a_negative_max_rows_is_a_usage_error(published, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sql", "--max-rows", "-1", "SELECT 1"])
    assert exit_.value.code == 2
    assert "--max-rows: '-1' is not a whole number" in capsys.readouterr().err


def test_a_missing_copy_names_the_setting(tmp_path, capsys):
    assert main(["sql", "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert "retention_published.duckdb" in err and "RETENTION_PUBLISHED_PATH" in err and "make run" in err


def test_live_reads_the_working_file(tmp_path, capsys):
    with duckdb.connect(os.environ["RETENTION_DUCKDB_PATH"]) as con:
        con.execute("CREATE TABLE t AS SELECT 'working' AS which")
    code, out, _ = run(capsys, "--live", "--format", "csv", "SELECT which FROM t")
    assert code == 0 and out == "which\r\nworking\r\n"


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"RETENTION_PUBLISHED_PATH": "{tmp}/shared/copy.duckdb"},
        {"RETENTION_DUCKDB_PATH": "~/wh/retention.duckdb", "RETENTION_PUBLISHED_PATH": ""},
        {"RETENTION_DUCKDB_PATH": "{tmp}/a/b.duckdb", "RETENTION_PUBLISHED_PATH": "~/copy.duckdb"},
    ],
)
def test_the_path_rules_match_the_pipelines_own(tmp_path, monkeypatch, settings):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in settings.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))

    assert database_path(live=False) == published_path()
    assert database_path(live=True) == resolve_duckdb_path()


def test_the_command_imports_no_dagster_and_prints_only_the_data(published):
    """Dagster's import and definition warnings must not reach an analyst's terminal or a CSV they redirect."""
    probe = (
        "import sys\n"
        "from retention_pipeline.__main__ import main\n"
        "code = main(['sql', '--format', 'csv', 'SELECT customer_id FROM raw.contacts'])\n"
        "assert 'dagster' not in sys.modules, sorted(m for m in sys.modules if m.startswith('dagster'))[:3]\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, env=os.environ.copy())

    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == b"customer_id\r\nc1\r\n"  # bytes: text mode would fold the CSV's CRLF
