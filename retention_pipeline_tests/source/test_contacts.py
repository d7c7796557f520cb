"""Contacts: every input row is either loaded (with its identifier issues) or rejected with a reason."""

from __future__ import annotations

import csv

import duckdb
import pytest

from retention_pipeline.source.contacts import load_contacts, read_contacts_csv, validate_contacts
from retention_pipeline.source.tables import create_raw_tables

CSV = """customer_id,person_id,email,phone,marketing_consent,extra
c1,p1, Ada.Lovelace@Example.COM ,+1 415 555 2671,true,x
c1,p2,not-an-email,12,yes,x
c1,p3,,(415) 555-2671,,x
c2,p4,grace@example.com,,maybe,x
c2,p4,grace2@example.com,,true,x
c9,p5,who@example.com,,true,x
c2,,anon@example.com,,true,x
c2,p6,broken@example.com
"""


@pytest.fixture
def csv_path(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes(CSV.encode() + "c2,p7,caf\xe9@example.com,,false,x\n".encode("latin-1"))
    return path


def test_every_row_is_accounted_for(csv_path):
    frame, malformed = read_contacts_csv(csv_path)
    assert malformed == [(9, "malformed_row (3 fields, header has 6)")]
    accepted, rejected = validate_contacts(frame, {"c1", "c2"}, "US")
    assert len(accepted) + len(rejected) + len(malformed) == 9
    assert dict(zip(rejected["person_id"], rejected["reason"], strict=True)) == {
        "p4": "duplicate_person", "p5": "unknown_customer", "": "missing_person_id",
    }  # fmt: skip
    people = accepted.set_index("person_id")
    assert people.loc["p1", "email_normalized"] == "ada.lovelace@example.com"
    assert people.loc["p1", "phone_e164"] == "+14155552671"
    assert people.loc["p3", "phone_e164"] == "+14155552671"  # national format, default region US
    assert people.loc["p2", "issues"] == ["invalid_email", "invalid_phone"]
    assert people.loc["p4", "issues"] == ["invalid_consent"]
    assert not people.loc["p4", "marketing_consent"]  # unreadable consent is no consent
    assert not people.loc["p3", "marketing_consent"]  # empty consent is no consent
    assert people.loc["p7", "issues"] == ["invalid_email"]  # undecodable byte replaced, then invalid


def test_load_writes_both_tables_and_counts(csv_path):
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("CREATE TEMP MACRO utc_ts(x) AS (CAST(x AS TIMESTAMPTZ) AT TIME ZONE 'UTC')")
    create_raw_tables(con)
    con.execute("INSERT INTO raw.metronome_customers (id, is_archived, raw, extracted_at) "
                "VALUES ('c1', false, '{}', now()), ('c2', false, '{}', now())")  # fmt: skip
    frame, malformed = read_contacts_csv(csv_path)
    result = load_contacts(con, frame, malformed, "US")
    assert result.rows_in == 9 and result.accepted == 5
    assert result.rejected == {"duplicate_person": 1, "unknown_customer": 1, "missing_person_id": 1,
                               "malformed_row": 1}  # fmt: skip
    assert result.issues == {"invalid_email": 2, "invalid_phone": 1, "invalid_consent": 1}
    assert con.execute("SELECT count(*) FROM raw.contacts").fetchone()[0] == 5
    assert con.execute("SELECT count(*) FROM raw.contacts_rejected").fetchone()[0] == 4


def test_an_unclosed_quote_or_a_huge_field_is_reported_line_by_line(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text(
        "customer_id,person_id,email,phone,marketing_consent\n"
        "c1,p1,a@example.com,,true\n"
        'c1,p2,"b@example.com,,true\n'  # the quote never closes: it swallows the lines below
        "c1,p3,c@example.com,,true\n"
        "c1,p4,d@example.com,,true\n"
    )
    frame, malformed = read_contacts_csv(path)
    assert list(frame["person_id"]) == ["p1"]
    assert [line for line, _ in malformed] == [3, 4, 5]  # every swallowed line is accounted for

    path.write_text(
        "customer_id,person_id,email,phone,marketing_consent\n"
        f"c1,p1,{'x' * 2_000_000},,true\n"
        "c1,p2,b@example.com,,true\n"
    )
    frame, malformed = read_contacts_csv(path)
    assert list(frame["person_id"]) == ["p2"] and len(malformed) == 1 and "field larger" in malformed[0][1]


FORMULAS = ['=HYPERLINK("http://evil.example","x")@x.com', "=1+2@x.com", "@SUM(1+1)@x.com", "-2+3@x.com",
            "+tag@example.com"]  # fmt: skip
NOT_ADDRESSES = ['"ann"@example.com', "a(b)@example.com", "a,b@example.com", "a;b@example.com", "<a>@example.com",
                 "a b@example.com", "a\\b@example.com", "ann@localhost", "ann@example..com", "ann@-x.com",
                 "ann@1.2.3.4", "ann@[1.2.3.4]", f"{'x' * 65}@example.com"]  # fmt: skip
ADDRESSES = ["o'brien@example.ie", "first+tag@example.co.uk", "a=b@example.com", "用户@例子.广告"]


def test_formulas_and_impossible_addresses_are_issues_and_never_stored(tmp_path):
    emails = FORMULAS + NOT_ADDRESSES + ADDRESSES
    path = tmp_path / "contacts.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "person_id", "email", "phone", "marketing_consent"])
        writer.writerows(["c1", f"p{i}", email, "+1 415 555 2671", "true"] for i, email in enumerate(emails))
    con = duckdb.connect()
    create_raw_tables(con)
    con.execute("INSERT INTO raw.metronome_customers (id, is_archived, raw, extracted_at) "
                "VALUES ('c1', false, '{}', now())")  # fmt: skip
    frame, malformed = read_contacts_csv(path)

    result = load_contacts(con, frame, malformed, "US")

    assert result.accepted == len(emails) and result.rejected == {}  # the people stay, with their phone
    assert result.issues == {"unsafe_email": len(FORMULAS), "invalid_email": len(NOT_ADDRESSES)}
    rows = con.execute(
        "SELECT email, email_normalized, issues, phone_e164 FROM raw.contacts ORDER BY source_row"
    )
    stored = dict(zip(emails, rows.fetchall(), strict=True))
    for email in FORMULAS:
        assert stored[email] == (None, None, ["unsafe_email"], "+14155552671")
    for email in NOT_ADDRESSES:
        assert stored[email] == (None, None, ["invalid_email"], "+14155552671")
    for email in ADDRESSES:
        assert stored[email] == (email, email.lower(), [], "+14155552671")
    # Nothing of a refused value is left anywhere in the table the sync reads identifiers from.
    everything = "\n".join(
        str(value) for row in con.execute("SELECT * FROM raw.contacts").fetchall() for value in row
    )
    assert [e for e in FORMULAS + NOT_ADDRESSES if e in everything] == []
