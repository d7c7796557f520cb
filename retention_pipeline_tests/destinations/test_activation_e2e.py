"""Activation end to end: the daily job on the Metronome sandbox, destinations as real loopback servers."""

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import duckdb

from retention_pipeline.definitions import defs
from retention_pipeline.warehouse import resolve_duckdb_path
from retention_pipeline_tests.destinations.conftest import membership_requests, pinterest_lists

DAY = "2026-11-19"
SYNC = dg.AssetKey(["sync", "activation_daily"])
SEGMENTS = ("usage_drop_wow", "renewal_7d_low_activity", "winback_lapsed_45_120")  # the daily ones


def run_daily(only_sync: bool = False, **config):
    run_config = {"ops": {"sync__activation_daily": {"config": config}}} if config else None
    result = defs.resolve_job_def("daily_retention").execute_in_process(
        partition_key=DAY, asset_selection=[SYNC] if only_sync else None, run_config=run_config
    )
    assert result.success
    return result


def db(sql, params=None):
    with duckdb.connect(str(resolve_duckdb_path())) as con:
        return con.execute(sql, params or []).fetchall()


def desired(segment, destination):
    return {r[0] for r in db(
        "SELECT person_id FROM segments.audiences WHERE segment = ? AND destination = ?", [segment, destination]
    )}  # fmt: skip


def state_email_hashes(segment, destination="meta", key="EMAIL"):
    return {r[0] for r in db(
        f"SELECT json_extract_string(payload, '$.{key}') FROM sync.destination_state "
        "WHERE segment = ? AND destination = ?", [segment, destination])} - {"", None}  # fmt: skip


def meta_emails(meta, routing, segment):
    return meta.members(routing["meta"]["audiences"][segment], "EMAIL")


def destination_requests(*sandboxes):
    """Requests that could change a destination (the resources' one credential probe per run is a GET)."""
    return sum(1 for s in sandboxes for r in s.requests if r.method != "GET")


def tiktok_emails(tiktok, routing, segment):
    return tiktok.members(routing["tiktok"]["audiences"][segment], "EMAIL_SHA256")


def pinterest_emails(pinterest, segment):
    """The segment's Pinterest list members; none when no sync had anyone to create its list from."""
    with duckdb.connect(str(resolve_duckdb_path())) as con:
        lists = pinterest_lists(con)
    return pinterest.members(lists[segment]) if segment in lists else set()


def test_first_run_adds_a_rerun_sends_nothing_and_a_leaver_is_removed(destinations):
    cio, meta, google, tiktok, pinterest, routing = destinations
    everywhere = (cio, meta, google, tiktok, pinterest)
    run_daily()
    for segment in SEGMENTS:
        people = desired(segment, "customerio")
        assert cio.segment_members(routing["customerio"]["manual_segments"][segment]) == people
        entered = {e["identifiers"]["id"] for e in cio.accepted_events()
                   if e["name"] == "segment_entered" and e["attributes"]["segment"] == segment}  # fmt: skip
        assert entered == people
        expected_hashes = state_email_hashes(segment)
        assert meta_emails(meta, routing, segment) == expected_hashes
        assert all(len(h) == 64 for h in expected_hashes)  # hashed, never raw
        assert google.member_count(f"list-{segment}") == len(desired(segment, "google"))
        assert tiktok_emails(tiktok, routing, segment) == state_email_hashes(
            segment, "tiktok", "EMAIL_SHA256"
        )
        assert pinterest_emails(pinterest, segment) == state_email_hashes(segment, "pinterest")
    assert any(pinterest_emails(pinterest, segment) for segment in SEGMENTS)  # lists were created and filled
    # Every membership request is in the ledger (Pinterest's list creations are in sync.destination_objects).
    assert db("SELECT count(*) FROM sync.ledger")[0][0] == membership_requests(*everywhere) > 0

    before = destination_requests(*everywhere)
    run_daily()
    assert destination_requests(*everywhere) == before  # nothing changed → zero requests (nor new objects)

    segment = "usage_drop_wow"
    leaver = sorted(desired(segment, "meta"))[0]
    customer = db("SELECT customer_id FROM raw.contacts WHERE person_id = ?", [leaver])[0][0]
    db("DELETE FROM segments.members WHERE segment = ? AND customer_id = ?", [segment, customer])
    run_daily(only_sync=True)
    assert leaver not in {r[0] for r in db(
        "SELECT member_key FROM sync.destination_state WHERE segment = ?", [segment])}  # fmt: skip
    assert meta_emails(meta, routing, segment) == state_email_hashes(segment)
    assert tiktok_emails(tiktok, routing, segment) == state_email_hashes(segment, "tiktok", "EMAIL_SHA256")
    assert pinterest_emails(pinterest, segment) == state_email_hashes(segment, "pinterest")
    exited = [e for e in cio.accepted_events() if e["name"] == "segment_exited"]
    assert {e["identifiers"]["id"] for e in exited} >= {leaver}


def test_suppressed_member_leaves_ad_audiences_but_keeps_customerio(destinations):
    cio, meta, google, tiktok, pinterest, routing = destinations
    run_daily()
    segment = "usage_drop_wow"
    person = sorted(desired(segment, "meta"))[0]
    customer, as_of = db(
        "SELECT customer_id, as_of FROM segments.members WHERE segment = ? AND person_id = ?",
        [segment, person],
    )[0]
    # The account lands in the latest do_not_retarget partition (as the hourly job would put it there).
    db("INSERT INTO segments.partitions VALUES ('do_not_retarget', 'hourly', 'test', ?, 1, 1, 0, 1, 0, NULL, NULL, "
       "NULL, 'ok', NULL, now())", [as_of])  # fmt: skip
    db("INSERT INTO segments.members VALUES ('do_not_retarget', 'hourly', 'test', ?, ?, ?, NULL, false, 'test')",
       [as_of, customer, person])  # fmt: skip
    run_daily(only_sync=True)
    assert meta_emails(meta, routing, segment) == state_email_hashes(segment)
    assert tiktok_emails(tiktok, routing, segment) == state_email_hashes(segment, "tiktok", "EMAIL_SHA256")
    assert pinterest_emails(pinterest, segment) == state_email_hashes(segment, "pinterest")
    assert person not in {r[0] for r in db(
        "SELECT member_key FROM sync.destination_state WHERE destination IN ('meta', 'google', 'tiktok', "
        "'pinterest')")}  # fmt: skip
    attributes = cio.person(id=person)["attributes"]
    assert attributes[f"rp_{segment}_tier"] in ("high", "low")  # still a Customer.io member
    assert not [e for e in cio.accepted_events() if e["name"] == "segment_exited"]


def test_a_207_rejection_is_recorded_and_retried_next_run(destinations):
    cio, meta, google, tiktok, pinterest, routing = destinations
    run_daily(dry_run=True)  # learn who will be sent, send nothing (nor create a Pinterest list)
    assert destination_requests(cio, meta, google, tiktok, pinterest) == 0
    person = sorted(desired("usage_drop_wow", "customerio"))[0]
    cio.reject_identifiers(person)
    run_daily()
    assert db(
        "SELECT DISTINCT status FROM sync.ledger_items WHERE destination = 'customerio' AND member_key = ?",
        [person],
    ) == [("rejected",)]
    cio._rejected.clear()  # the destination accepts the person again
    run_daily(only_sync=True)
    assert ("acked",) in db(
        "SELECT status FROM sync.ledger_items WHERE destination = 'customerio' AND member_key = ?", [person]
    )
    assert cio.person(id=person)["attributes"]["rp_usage_drop_wow_tier"] in ("high", "low")


def test_a_process_killed_mid_sync_reconverges_without_duplicate_events(destinations):
    cio, meta, google, tiktok, pinterest, routing = destinations
    job = defs.resolve_job_def("daily_retention")
    upstream = dg.AssetSelection.assets(SYNC).upstream().resolve(defs.get_repository_def().asset_graph) - {
        SYNC
    }
    job.execute_in_process(
        partition_key=DAY, asset_selection=list(upstream & job.asset_layer.executable_asset_keys)
    )  # everything the sync needs
    # The first manual-segment call stalls (the batch with its events was already accepted): kill -9 then.
    cio.faults.add(r"/add_customers$", 429, headers={"Retry-After": "30"})
    code = (
        "from retention_pipeline.definitions import defs; import dagster as dg; "
        f"defs.resolve_job_def('daily_retention').execute_in_process(partition_key='{DAY}', "
        "asset_selection=[dg.AssetKey(['sync', 'activation_daily'])])"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    deadline = time.monotonic() + 60
    while not any(r.path.endswith("/add_customers") for r in cio.requests):
        assert time.monotonic() < deadline and child.poll() is None, "sync never reached the stalled call"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    accepted_before = len(cio.accepted_events())
    assert accepted_before > 0 and db("SELECT count(*) FROM sync.destination_state")[0][0] == 0

    run_daily(only_sync=True)

    events = cio.accepted_events()
    keys = [(e["identifiers"]["id"], e["attributes"]["segment"], e["name"]) for e in events]
    assert len(keys) == len(set(keys))  # no duplicate effect: every event accepted once
    assert cio.duplicate_events_dropped >= accepted_before  # the resend carried the same ids
    for segment in SEGMENTS:
        assert cio.segment_members(routing["customerio"]["manual_segments"][segment]) == desired(
            segment, "customerio"
        )
        assert google.member_count(f"list-{segment}") == len(desired(segment, "google"))
    assert db("SELECT count(*) FROM sync.ledger_items WHERE status = 'unacknowledged'")[0][0] > 0
