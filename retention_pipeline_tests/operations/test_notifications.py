"""The notifications sensor: inbox rows land in raw.metronome_notifications once, and only relevant ones run jobs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
import duckdb
import pytest

from retention_pipeline.operations import jobs
from retention_pipeline.operations.notifications import affects_segments, defs, metronome_notifications_sensor
from retention_pipeline.operations.webhooks import Inbox
from retention_pipeline.partitions import HOURLY, latest_complete_partition
from retention_pipeline.warehouse import DuckDBWarehouse

RECEIVED_AT = datetime(2026, 11, 20, 10, 6, tzinfo=UTC)
LOW_BALANCE = {
    "id": "evt-low-1",
    "type": "alerts.low_remaining_commit_balance_reached",
    "properties": {
        "customer_id": "cus-1",
        "alert_id": "al-1",
        "timestamp": "2026-11-20T10:05:00Z",
        "threshold": 1000,
        "triggered_by": "usage",
        "commit_id": "cm-1",
        "remaining_balance": 900,
    },
}
# An offset notification: the flat lifecycle shape plus offset_id and offset_duration.
CREDIT_ENDING = {
    "id": "evt-credit-2",
    "type": "credit.segment.end",
    "timestamp": "2026-11-24T00:00:00+00:00",
    "environment_type": "SANDBOX",
    "customer_id": "cus-2",
    "contract_id": "ct-2",
    "credit_id": "cr-2",
    "segment_id": "seg-2",
    "segment_index": 0,
    "segment_count": 3,
    "offset_id": "off-1",
    "offset_duration": "-P3DT12H",
}
INTEGRATION_ISSUE = {
    "id": "evt-int-3",
    "type": "integration.issue",
    "properties": {"integration": "stripe", "error": "token expired", "timestamp": "2026-11-20T09:00:00Z"},
}


@pytest.fixture
def duck_path(tmp_path):
    return tmp_path / "retention.duckdb"


def receive(inbox_path, *events):
    inbox = Inbox(inbox_path)
    inbox.create()
    for event in events:
        inbox.append(event, json.dumps(event), RECEIVED_AT)


@dg.asset(partitions_def=HOURLY, tags={"cadence": "hourly"})
def hourly_stand_in() -> None:
    """Gives hourly_retention something to select, so its partitioned run requests resolve as in the project."""


def evaluate(instance, duck_path, cursor=None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"duckdb": DuckDBWarehouse(path=str(duck_path))},
        definitions=dg.Definitions.merge(jobs.defs, defs, dg.Definitions(assets=[hourly_stand_in])),
    )
    return metronome_notifications_sensor.evaluate_tick(context)


def notifications(duck_path):
    with duckdb.connect(str(duck_path)) as con:
        return con.execute(
            "SELECT id, type, category, customer_id, contract_id, commit_id, credit_id, segment_id, "
            "offset_duration, event_timestamp, received_at, payload->>'id' "
            "FROM raw.metronome_notifications ORDER BY id"
        ).fetchall()


def test_ingests_exactly_once_and_requests_the_latest_complete_hour(instance, inbox_path, duck_path):
    receive(inbox_path, LOW_BALANCE, CREDIT_ENDING)
    before = latest_complete_partition("hourly", datetime.now(UTC))
    first = evaluate(instance, duck_path)
    after = latest_complete_partition("hourly", datetime.now(UTC))

    [run] = first.run_requests
    assert run.partition_key in (before, after)
    assert run.run_key == "metronome-notifications-1-2"
    assert first.cursor == "2"
    rows = notifications(duck_path)
    assert rows == [
        ("evt-credit-2", "credit.segment.end", "lifecycle", "cus-2", "ct-2", None, "cr-2", "seg-2", "-P3DT12H",
         datetime(2026, 11, 24), datetime(2026, 11, 20, 10, 6), "evt-credit-2"),
        ("evt-low-1", LOW_BALANCE["type"], "threshold", "cus-1", None, "cm-1", None, None, None,
         datetime(2026, 11, 20, 10, 5), datetime(2026, 11, 20, 10, 6), "evt-low-1"),
    ]  # fmt: skip

    again = evaluate(instance, duck_path, cursor=first.cursor)
    assert again.run_requests == [] and "No notifications after inbox row 2" in again.skip_message

    reread = evaluate(instance, duck_path, cursor=None)
    assert reread.run_requests == [] and "Stored 0 new notifications" in reread.skip_message
    assert notifications(duck_path) == rows


def test_irrelevant_event_is_stored_and_skipped_with_its_type(instance, inbox_path, duck_path):
    receive(inbox_path, INTEGRATION_ISSUE)
    result = evaluate(instance, duck_path)
    assert result.run_requests == []
    assert result.skip_message == (
        "Stored 1 new notifications (types: integration.issue); none affects segment membership."
    )
    assert result.cursor == "1"
    assert [row[:4] for row in notifications(duck_path)] == [
        ("evt-int-3", "integration.issue", "other", None)
    ]


def test_skips_until_the_receiver_has_created_the_inbox(instance, duck_path):
    result = evaluate(instance, duck_path)
    assert "No webhook inbox" in result.skip_message and result.cursor is None


def test_busy_warehouse_skips_without_moving_the_cursor(instance, inbox_path, duck_path, monkeypatch):
    receive(inbox_path, LOW_BALANCE)

    def locked(*args, **kwargs):
        raise duckdb.IOException('Could not set lock on file "retention.duckdb": Conflicting lock is held')

    monkeypatch.setattr(duckdb, "connect", locked)
    result = evaluate(instance, duck_path, cursor="0")
    assert result.run_requests == [] and "busy" in result.skip_message
    assert result.cursor == "0"


@pytest.mark.parametrize(
    ("event_type", "relevant"),
    [
        ("alerts.low_remaining_contract_credit_balance_reached", True),
        ("alerts.low_remaining_seat_balance_reached", True),
        ("alerts.low_remaining_commit_percentage_reached", True),
        ("alerts.spend_threshold_reached", True),
        ("invoice.billing_provider_error", True),
        ("contract.end", True),
        ("commit.segment.end", True),
        ("alerts.usage_threshold_reached", False),
        ("invoice.finalized", False),
        ("contract.edit", False),
    ],
)
def test_segment_triggers(event_type, relevant):
    assert affects_segments(event_type) is relevant


def test_definitions_merge_with_the_jobs():
    merged = dg.Definitions.merge(jobs.defs, defs, dg.Definitions(resources={"duckdb": DuckDBWarehouse()}))
    sensor = merged.get_repository_def().get_sensor_def("metronome_notifications_sensor")
    assert sensor.job_name == "hourly_retention" and sensor.minimum_interval_seconds == 30
