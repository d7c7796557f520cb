"""docs/analysts.md works as written: every ```sql block runs through the `sql` command, in every format, against
the published copy of a real sandbox run, and answers with rows where the question implies some; and
analytics.customers joins cleanly to every feature, segment and sync table of that run."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import duckdb
import pytest

from retention_pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "analysts.md"
FORMATS = ("table", "csv", "json", "markdown")
# Questions whose honest answer can be "nobody" on a small tenant; every other block must return rows.
MAY_BE_EMPTY = {
    "What changed since yesterday? (2)": "lists accounts only when a daily segment changed between the last two days",
    "Which accounts are in several segments at once?": "40 sandbox accounts rarely overlap",
    "Whose credits are running out?": "depends on which sandbox accounts have prepaid credits",
}
# Every table joined on customer_id, and the column holding it.
CUSTOMER_TABLES = [
    "analytics.customer_features", "analytics.customer_features_latest", "analytics.lifecycle_events",
    "analytics.usage_daily", "segments.members", "segments.changes", "segments.audiences", "segments.suppressed",
    "sync.destination_state", "raw.contacts", "staging.stg_contracts", "staging.stg_invoices",
]  # fmt: skip


def sql_blocks() -> dict[str, str]:
    """Each ```sql block of the guide, named by its heading (plus ' (n)' for the n-th block under one heading)."""
    blocks: dict[str, str] = {}
    heading, count = "", 0
    for match in re.finditer(r"^(#{2,3}) ([^\n]+)$|^```sql\n(.*?)^```", GUIDE.read_text(), re.M | re.S):
        if match.group(2):
            heading, count = match.group(2).strip(), 0
        else:
            count += 1
            blocks[heading if count == 1 else f"{heading} ({count})"] = match.group(3).strip().rstrip(";")
    return blocks


BLOCKS = sql_blocks()


def test_the_guide_has_the_questions_the_issue_asks_for():
    assert {
        "Who is at risk this week?",
        "What changed since yesterday?",
        "What revenue has each segment brought in since entry?",
        "Is targeting working? Holdout lift",
        "How many people has each destination acknowledged, per segment?",
        "Which accounts are in several segments at once?",
        "Whose credits are running out?",
    } <= set(BLOCKS)
    assert set(MAY_BE_EMPTY) <= set(BLOCKS)
    assert "`analytics/customers`" in GUIDE.read_text()  # its asset key, as the docs test expects


@pytest.fixture(scope="module")
def copy(sandbox_run) -> dict[str, str]:
    """The published copy of the session's `retention run` on the sandbox (conftest.sandbox_run: a pinned clock,
    40 accounts, its daily history); every query here only reads it."""
    return {"RETENTION_DUCKDB_PATH": str(sandbox_run.database), "published": str(sandbox_run.published)}


@pytest.fixture
def published(copy, monkeypatch) -> Path:
    """The run's files for this test (the shared conftest resets the environment per test)."""
    monkeypatch.setenv("RETENTION_DUCKDB_PATH", copy["RETENTION_DUCKDB_PATH"])
    monkeypatch.setenv("RETENTION_PUBLISHED_PATH", copy["published"])
    return Path(copy["published"])


def direct(path: Path, query: str) -> tuple[list[str], list[tuple]]:
    with duckdb.connect(str(path), read_only=True) as con:
        result = con.execute(query)
        return [d[0] for d in result.description], result.fetchall()


def parsed(fmt: str, out: str) -> tuple[list[str], int]:
    """Column names and row count of the command's output, read back the way its reader would."""
    if fmt == "json":
        rows = json.loads(out)
        return (list(rows[0]) if rows else []), len(rows)
    if fmt == "csv":
        header, *rows = list(csv.reader(io.StringIO(out, newline="")))
        return header, len(rows)
    lines = out.splitlines()
    if fmt == "markdown":
        assert re.fullmatch(r"\|(---:?\|)+", lines[1]), lines[1]
        return [c.strip() for c in lines[0].strip("|").split(" | ")], len(lines) - 2
    assert re.fullmatch(r"\((\d+) rows?\)", lines[-1]), lines[-1]
    return lines[0].split(), len(lines) - 3


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("question", list(BLOCKS))
def test_every_example_query_answers_through_the_sql_command(published, capsys, question, fmt):
    columns, rows = direct(published, BLOCKS[question])

    code = main(["sql", "--format", fmt, "--max-rows", "0", BLOCKS[question]])
    out, err = capsys.readouterr()

    assert (code, err) == (0, ""), err
    if question not in MAY_BE_EMPTY:
        assert rows, f"{question!r} returned no rows on the sandbox run"
    shown_columns, shown_rows = parsed(fmt, out)
    assert shown_rows == len(rows)
    if rows or fmt != "json":
        assert shown_columns == columns
    assert "…" not in out


def test_who_changed_since_yesterday_adds_up_to_the_per_segment_counts(published):
    _, counts = direct(published, BLOCKS["What changed since yesterday?"])
    _, who = direct(published, BLOCKS["What changed since yesterday? (2)"])

    assert {s for s, *_ in counts} >= {s for s, *_ in who}
    for segment, _, _, before, after, entered, exited in counts:
        assert after - before == entered - exited, segment
        changes = [row[1] for row in who if row[0] == segment]
        assert (changes.count("entered"), changes.count("exited")) == (entered, exited), segment


def test_at_risk_accounts_are_current_members_of_target_segments(published):
    _, rows = direct(published, BLOCKS["Who is at risk this week?"])
    _, members = direct(
        published,
        "SELECT DISTINCT m.segment, m.customer_id FROM segments.members AS m "
        "JOIN segments.definitions AS d USING (segment, cadence) WHERE d.purpose = 'target' "
        "QUALIFY m.as_of = max(m.as_of) OVER (PARTITION BY m.segment)",
    )
    assert {(segment, customer_id) for segment, _, customer_id, *_ in rows} <= set(members)
    assert all(name for _, name, *_ in rows)  # every account has its name from analytics.customers


def test_customers_is_published_with_one_row_per_metronome_customer(published):
    _, [(customers, distinct, raw)] = direct(
        published,
        "SELECT count(*), count(DISTINCT customer_id), (SELECT count(*) FROM raw.metronome_customers) "
        "FROM analytics.customers",
    )
    _, [(with_contract, with_plan)] = direct(
        published, "SELECT count(contract_id), count(plan) FROM analytics.customers"
    )
    assert customers == distinct == raw == 40
    assert 0 < with_plan <= with_contract < customers + 1


@pytest.mark.parametrize("table", CUSTOMER_TABLES)
def test_every_customer_id_joins_to_analytics_customers(published, table):
    _, [(ids, orphans)] = direct(
        published,
        f"SELECT count(DISTINCT t.customer_id), count(DISTINCT t.customer_id) FILTER (WHERE c.customer_id IS NULL) "
        f"FROM {table} AS t LEFT JOIN analytics.customers AS c USING (customer_id) WHERE t.customer_id IS NOT NULL",
    )
    assert orphans == 0
    if table in ("analytics.customer_features", "segments.members", "sync.destination_state"):
        assert ids > 0, table  # the run filled it, so the join was really exercised
