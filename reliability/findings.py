"""Bugs the suite found in the project (docs/reliability.md has each reproduction and fix).

A failing case names the finding it reproduces. Only an open finding (`fixed_in` None) excuses a failing row; a
fixed one that fails again is a regression and breaks `make reliability` and the quick test like any new failure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    summary: str
    found_at: str  # the commit the suite reproduced it at
    fixed_in: str | None = None


FINDINGS = {
    "F1": Finding("A 200 answer without `data` (e.g. `{}`) was read as an empty list: snapshots and usage windows "
                  "replaced with nothing, run green (source/extract.py).", "80b2af7", "0607a25"),
    "F2": Finding("An empty page still carrying a cursor ended paging mid-list: the rows behind it were silently "
                  "dropped (source/extract.py).", "80b2af7", "0607a25"),
    "F3": Finding("A 200 answer that is not JSON failed with a bare JSONDecodeError naming neither endpoint nor "
                  "customer (source/extract.py).", "80b2af7", "0607a25"),
    "F4": Finding("A sync that left items unacknowledged (outage after retries, 207s, Meta invalid entries) ended "
                  "green with INFO logs only: a silent partial success (destinations/assets.py).", "80b2af7",
                  "9abaf43"),
    "F5": Finding("Meta: a final batch retried after a lost answer hit 2650/1870159 'session already finished' and "
                  "its rows stayed unacknowledged until the next run (destinations/meta.py).", "80b2af7", "9abaf43"),
    "F6": Finding("Contacts CSV: an unclosed quote swallowed every following line into one malformed row; those "
                  "people were neither loaded nor rejected (source/contacts.py).", "80b2af7", "9abaf43"),
    "F7": Finding("Contacts CSV: a field over 131,072 characters crashed the contacts asset with an unnamed "
                  "csv.Error (source/contacts.py).", "80b2af7", "9abaf43"),
    "F8": Finding("RETENTION_EXPORT_DIR was interpolated into `COPY ... TO '<path>'`: a quote in the path failed the "
                  "sync after the sends with a parser error not naming the variable (destinations/"
                  "warehouse_export.py).", "80b2af7", "9abaf43"),
}  # fmt: skip

OPEN = {key for key, finding in FINDINGS.items() if finding.fixed_in is None}
