"""The delta-sync engine against a scripted destination: plans, ledger, retries, convergence."""

import dataclasses
import hashlib
import json
from datetime import datetime

import pytest

from retention_pipeline.destinations.assets import _segment_status, plan_units
from retention_pipeline.destinations.sync import ItemResult, RequestResult, SendResult, SyncContext, run_sync
from retention_pipeline.segments.engine import suppression_status
from retention_pipeline.segments.fixtures import compute_with_features, prepare
from retention_pipeline.segments.project import load_segments
from retention_pipeline.warehouse import DuckDBWarehouse

AS_OF = datetime(2026, 11, 20)
DROP = {"usage_7d": 10, "usage_prior_7d": 100, "wow_usage_change_pct": -90}


class ScriptedDestination:
    """Acknowledges everything except member keys listed in `reject`; records every call."""

    def __init__(self, name: str, limit: int = 3):
        self.name, self.per_request_limit = name, limit
        self.reject: set[str] = set()
        self.calls: list[tuple[str, str, list[str]]] = []
        self.crash_after_calls: int | None = None

    def expected_requests(self, changes):
        ops = {c.operation for c in changes}
        return sum(-(-sum(c.operation == op for c in changes) // self.per_request_limit) for op in ops)

    def send(self, segment, changes, context):
        result = SendResult()
        for op in ("add", "remove", "update"):
            batch = [c for c in changes if c.operation == op]
            for start in range(0, len(batch), self.per_request_limit):
                if self.crash_after_calls is not None and len(self.calls) >= self.crash_after_calls:
                    raise KeyboardInterrupt("simulated process death")
                chunk = batch[start : start + self.per_request_limit]
                self.calls.append((segment.name, op, [c.member_key for c in chunk]))
                request = RequestResult(op, len(chunk), ok=True, http_status=200)
                result.requests.append(request)
                result.items += [
                    ItemResult(c.member_key, op, c.member_key not in self.reject, "rejected by test",
                               request.request_id)
                    for c in chunk
                ]  # fmt: skip
        return result


@pytest.fixture
def world(tmp_path):
    warehouse = DuckDBWarehouse(path=str(tmp_path / "engine.duckdb"))
    segments = [dataclasses.replace(s, holdout_pct=0) for s in load_segments() if s.cadence == "daily"]
    segments += [s for s in load_segments() if s.name == "do_not_retarget"]
    people = [{"customer_id": f"a{i}", "person_id": f"a{i}-p", "marketing_consent": True} for i in range(10)]
    with warehouse.connect() as con:
        prepare(con, people)
        con.execute(
            "UPDATE raw.contacts SET email = person_id || '@example.com', email_normalized = person_id || '@example.com'"
        )
    return warehouse, segments


def materialize(warehouse, segments, accounts, as_of=AS_OF):
    with warehouse.connect() as con:
        compute_with_features(con, segments, "daily", as_of, accounts, override={"*"})


def sync(warehouse, segments, adapters, dry_run=False, blocked=frozenset()):
    """What the activation asset does, with every destination at one target and `blocked` held by the guard."""
    ctx = SyncContext("s-" + datetime.now().isoformat(), "daily", "2026-11-19", AS_OF)
    with warehouse.connect() as con:
        status = {
            name: (as_of, "blocked" if name in blocked else guard)
            for name, (as_of, guard) in _segment_status(con).items()
        }
        suppression = suppression_status(con)
    targets = {destination: (lambda segment: "test-target") for destination in adapters}
    units = plan_units(segments, "daily", AS_OF, status, suppression, targets)
    return run_sync(warehouse.connect, units, adapters, ctx, dry_run=dry_run, log=print)


def state(warehouse, destination="meta"):
    with warehouse.connect() as con:
        return {
            r[0]
            for r in con.execute(
                "SELECT member_key FROM sync.destination_state WHERE segment = 'usage_drop_wow' AND destination = ?",
                [destination],
            ).fetchall()
        }


def test_first_run_adds_second_sends_nothing_then_removals(world):
    warehouse, segments = world
    meta = ScriptedDestination("meta")
    materialize(warehouse, segments, [{"customer_id": f"a{i}", **DROP} for i in range(7)])
    reports = sync(warehouse, segments, {"meta": meta})
    drop = next(r for r in reports if r.segment == "usage_drop_wow" and r.destination == "meta")
    assert (drop.adds, drop.requests, drop.expected_requests, drop.acked) == (7, 3, 3, 7)  # ⌈7 / 3⌉
    assert state(warehouse) == {f"a{i}-p" for i in range(7)}

    meta.calls.clear()
    sync(warehouse, segments, {"meta": meta})
    assert meta.calls == []  # nothing changed → zero requests

    materialize(warehouse, segments, [{"customer_id": f"a{i}", **DROP} for i in range(2, 7)])
    sync(warehouse, segments, {"meta": meta})
    assert [(op, keys) for _, op, keys in meta.calls] == [("remove", ["a0-p", "a1-p"])]
    assert state(warehouse) == {f"a{i}-p" for i in range(2, 7)}


def test_rejected_rows_are_recorded_and_retried_next_run(world):
    warehouse, segments = world
    meta = ScriptedDestination("meta")
    meta.reject = {"a3-p"}
    materialize(warehouse, segments, [{"customer_id": f"a{i}", **DROP} for i in range(5)])
    sync(warehouse, segments, {"meta": meta})
    assert "a3-p" not in state(warehouse)
    with warehouse.connect() as con:
        assert con.execute(
            "SELECT status, reason FROM sync.ledger_items WHERE member_key = 'a3-p' AND destination = 'meta'"
        ).fetchall() == [("rejected", "rejected by test")]
    meta.reject, meta.calls = set(), []
    sync(warehouse, segments, {"meta": meta})
    assert [(op, keys) for _, op, keys in meta.calls] == [("add", ["a3-p"])]
    assert "a3-p" in state(warehouse)


def test_a_crash_between_send_and_ack_converges_on_the_next_run(world):
    warehouse, segments = world
    meta = ScriptedDestination("meta")
    meta.crash_after_calls = 1
    materialize(warehouse, segments, [{"customer_id": f"a{i}", **DROP} for i in range(7)])
    with pytest.raises(KeyboardInterrupt):
        sync(warehouse, segments, {"meta": meta})
    assert state(warehouse) == set()  # nothing acknowledged: the intent rows alone
    meta.crash_after_calls = None
    sync(warehouse, segments, {"meta": meta})
    assert state(warehouse) == {f"a{i}-p" for i in range(7)}
    with warehouse.connect() as con:
        statuses = dict(con.execute("SELECT status, count(*) FROM sync.ledger_items GROUP BY 1").fetchall())
    assert statuses["unacknowledged"] == 7 and statuses["acked"] >= 7


def test_dry_run_plans_but_sends_nothing_and_blocked_segments_are_skipped(world):
    warehouse, segments = world
    meta = ScriptedDestination("meta")
    materialize(warehouse, segments, [{"customer_id": f"a{i}", **DROP} for i in range(4)])
    reports = sync(warehouse, segments, {"meta": meta}, dry_run=True)
    drop = next(r for r in reports if r.segment == "usage_drop_wow" and r.destination == "meta")
    assert (drop.adds, drop.expected_requests, drop.requests) == (4, 2, 0) and meta.calls == []
    reports = sync(warehouse, segments, {"meta": meta}, blocked={"usage_drop_wow"})
    drop = next(r for r in reports if r.segment == "usage_drop_wow" and r.destination == "meta")
    assert drop.mode == "suppress_only" and "held by its size guard" in drop.skipped
    assert meta.calls == [] and state(warehouse) == set()


def test_ad_payloads_are_normalized_then_hashed_per_platform(world):
    """Published vectors: sha256("mary@example.com"), sha256("15559876543") for Meta, E.164 with '+' for Google."""
    warehouse, segments = world
    with warehouse.connect() as con:
        # email_normalized as the contacts loader writes it (trimmed, lowercased); the sync hashes that column.
        con.execute("UPDATE raw.contacts SET email = '  Mary@Example.COM ', email_normalized = 'mary@example.com', "
                    "phone_e164 = '+15559876543' WHERE person_id = 'a0-p'")  # fmt: skip
    materialize(warehouse, segments, [{"customer_id": "a0", **DROP}])
    sync(warehouse, segments, {"meta": ScriptedDestination("meta"), "google": ScriptedDestination("google")})
    with warehouse.connect() as con:
        payloads = dict(con.execute(
            "SELECT destination, CAST(payload AS VARCHAR) FROM sync.destination_state WHERE member_key = 'a0-p' "
            "AND segment = 'usage_drop_wow'").fetchall())  # fmt: skip
    assert json.loads(payloads["meta"]) == {
        "EMAIL": "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79",
        "PHONE": "1ef970831d7963307784fa8688e8fce101a15685d62aa765fed23f3a2c576a4e",
    }
    google = json.loads(payloads["google"])
    assert google["emailAddress"] == "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"
    assert google["phoneNumber"] == hashlib.sha256(b"+15559876543").hexdigest()
    assert "mary" not in payloads["meta"].lower() + payloads["google"].lower()


def test_export_path_with_a_quote_is_written(world, tmp_path):
    from retention_pipeline.destinations.warehouse_export import export_partition

    warehouse, segments = world
    materialize(warehouse, segments, [{"customer_id": "a0", **DROP}])
    root = tmp_path / "it's here"
    with warehouse.connect() as con:
        rows = export_partition(con, root, "daily", "2026-11-19")
    assert (
        rows["members"] >= 1
        and (root / "members" / "cadence=daily" / "partition=2026-11-19.parquet").exists()
    )


def test_meta_retry_refused_as_session_finished_counts_as_landed():
    """A retry after a lost answer meets Meta's 'session already finished' (2650/1870159): the batch had landed."""
    import httpx

    from retention_pipeline.destinations._http import Reply
    from retention_pipeline.destinations.meta.client import MetaClient

    client = MetaClient(graph_url="http://meta.invalid/v25.0", access_token="t", ad_account_id="1")
    finished = httpx.Response(
        400, json={"error": {"code": 2650, "error_subcode": 1870159, "message": "done"}}
    )
    assert client._result(Reply(finished, attempts=2), "aud", 7, 1, 0, 10).ok
    assert not client._result(
        Reply(finished, attempts=1), "aud", 7, 1, 0, 10
    ).ok  # a first attempt is an error
