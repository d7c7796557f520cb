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
                  "its rows stayed unacknowledged until the next run (destinations/meta/client.py).", "80b2af7", "9abaf43"),
    "F6": Finding("Contacts CSV: an unclosed quote swallowed every following line into one malformed row; those "
                  "people were neither loaded nor rejected (source/contacts.py).", "80b2af7", "9abaf43"),
    "F7": Finding("Contacts CSV: a field over 131,072 characters crashed the contacts asset with an unnamed "
                  "csv.Error (source/contacts.py).", "80b2af7", "9abaf43"),
    "F8": Finding("RETENTION_EXPORT_DIR was interpolated into `COPY ... TO '<path>'`: a quote in the path failed the "
                  "sync after the sends with a parser error not naming the variable (destinations/"
                  "warehouse_export.py).", "80b2af7", "9abaf43"),
    "F9": Finding("Suppression missing on a first run: the daily job ran before any do_not_retarget partition existed, "
                  "so archived, just-renewed and flagged accounts' people were uploaded (hashed) to Meta and Google; "
                  "the routing-view check passed anyway (segments/engine.py, segments/assets.py).", "cd941bf",
                  "fcb3ce9"),
    "F10": Finding("Suppression waited for the segment's cadence: an account suppressed after the daily run stayed in "
                   "the daily segments' ad audiences until the next day (destinations/assets.py).", "cd941bf",
                   "fcb3ce9"),
    "F11": Finding("One person in two accounts multiplied sync state: state keyed by person_id alone doubled on every "
                   "re-run (0 → 4 → 16 → 256 updates) and Customer.io attributes flipped between the accounts "
                   "(destinations/sync.py).", "cd941bf", "fcb3ce9"),
    "F12": Finding("Missing credentials silently switched a destination (or Metronome) to its sandbox, whose acks "
                   "were recorded in the same state: the real destination never received those people afterwards "
                   "(destinations/resources.py, source/metronome.py).", "cd941bf", "fcb3ce9"),
    "F13": Finding("A failing ERROR data test (usage_is_non_negative on negative usage) did not stop activation: "
                   "segments grew and Meta/Google accepted the new members (models/assets.py, segments/).",
                   "cd941bf", "fcb3ce9"),
    "F14": Finding("Inbox recreation skipped events: the notifications sensor's cursor was a bare inbox row number, "
                   "so after the inbox file was deleted, moved or restored, new events were skipped until the "
                   "numbering passed the old cursor; a receiver whose file was deleted answered 503 until restarted "
                   "(operations/notifications.py, operations/webhooks.py).", "cd941bf", "fcb3ce9"),
    "F15": Finding("Burst resets: the receiver listened with socketserver's default backlog of 5, so 200 concurrent "
                   "deliveries got TCP resets for about 70% of them (operations/webhooks.py).", "cd941bf",
                   "fcb3ce9"),
    "F16": Finding("Poisoned bodies killed the handler: a signed body with JSON nested ~1,000 deep (RecursionError) "
                   "or a lone surrogate escape in a stored field (UnicodeEncodeError in SQLite) dropped the "
                   "connection with no answer and a traceback on stderr; client disconnects were tracebacks too "
                   "(operations/webhooks.py).", "cd941bf", "fcb3ce9"),
    "F17": Finding("Disk full on publish left a hidden temp file per attempt and masked the error: later runs "
                   "failed with 'cannot rollback - no transaction is active' instead of 'No space left on device' "
                   "(operations/publish.py, BEGIN/ROLLBACK sites).", "cd941bf", "fcb3ce9"),
    "F18": Finding("Pinterest: a customer list created during a send is recorded in sync.destination_objects only "
                   "after every destination's sends, while its people are acknowledged at once under a target that "
                   "does not name the list; a kill -9 in between leaves them acknowledged in a list the pipeline no "
                   "longer knows (never updated, removed or suppressed again) and the next run creates no list for "
                   "them (destinations/assets.py record_created, destinations/pinterest/__init__.py state_target).",
                   "working tree of issue 14", "issue 14: the engine's on_sent hook records the list and re-keys "
                   "the send's items to it before any acknowledgement"),
    "F19": Finding("Pinterest: a list creation whose answer was lost (applied, connection reset) is not retried, as "
                   "designed, but nothing looks the list up afterwards: the next run creates a second list and the "
                   "first keeps its first records, untracked (destinations/pinterest/adapter.py create_object).",
                   "working tree of issue 14", "issue 14: the adapter reuses a list with the segment's neutral name"),
    "F20": Finding("TikTok (any destination that creates its objects before sending): when creating a segment's "
                   "audience fails after retries the segment is skipped with a WARNING, the step succeeds and no "
                   "check fails, unlike a failed membership request (destinations/objects.py resolve_objects, "
                   "destinations/assets.py with_objects).", "working tree of issue 14",
                   "issue 14: a creation failure fails the sync step, naming segment and destination"),
}  # fmt: skip

OPEN = {key for key, finding in FINDINGS.items() if finding.fixed_in is None}
