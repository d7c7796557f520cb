"""The notifications sensor: inbox rows land in raw.metronome_notifications once, and only relevant ones run jobs."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import dagster as dg
import duckdb
import pytest

from retention_pipeline.operations import jobs
from retention_pipeline.operations.notifications import (
    affects_segments,
    defs,
    metronome_notifications_sensor,
    store_notifications,
)
from retention_pipeline.operations.webhooks import Inbox, resolve_inbox_path
from retention_pipeline.partitions import DAILY, HOURLY, WEEKLY, latest_complete_partition
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


def inbox_id(inbox_path) -> str:
    with sqlite3.connect(inbox_path) as con:
        return con.execute("SELECT inbox_id FROM inbox_identity").fetchone()[0]


def low_balance(event_id: str) -> dict:
    return {**LOW_BALANCE, "id": event_id}


@dg.asset(partitions_def=HOURLY, tags={"cadence": "hourly"})
def hourly_stand_in() -> None:
    """Gives hourly_retention something to select, so its partitioned run requests resolve as in the project."""


@dg.asset(partitions_def=DAILY, tags={"cadence": "daily"})
def daily_stand_in() -> None:
    """The jobs take their partitions from their assets, so the daily schedule needs one too."""


@dg.asset(key=["analytics", "churn_model_weekly"], partitions_def=WEEKLY, tags={"cadence": "weekly"})
def weekly_stand_in() -> None:
    """The weekly churn model's job selects its training asset by key."""


STAND_INS = dg.Definitions(assets=[hourly_stand_in, daily_stand_in, weekly_stand_in])


def evaluate(instance, duck_path, cursor=None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"duckdb": DuckDBWarehouse(path=str(duck_path))},
        definitions=dg.Definitions.merge(jobs.defs, defs, STAND_INS),
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
    assert run.run_key.startswith("metronome-notifications-")
    assert first.cursor == f"{inbox_id(inbox_path)}:2:evt-credit-2"
    rows = notifications(duck_path)
    assert rows == [
        ("evt-credit-2", "credit.segment.end", "lifecycle", "cus-2", "ct-2", None, "cr-2", "seg-2", "-P3DT12H",
         datetime(2026, 11, 24), datetime(2026, 11, 20, 10, 6), "evt-credit-2"),
        ("evt-low-1", LOW_BALANCE["type"], "threshold", "cus-1", None, "cm-1", None, None, None,
         datetime(2026, 11, 20, 10, 5), datetime(2026, 11, 20, 10, 6), "evt-low-1"),
    ]  # fmt: skip

    again = evaluate(instance, duck_path, cursor=first.cursor)
    assert again.run_requests == []
    assert again.skip_message == f"No notifications after row 2 of inbox {inbox_id(inbox_path)}."

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
    assert result.cursor == f"{inbox_id(inbox_path)}:1:evt-int-3"
    assert [row[:4] for row in notifications(duck_path)] == [
        ("evt-int-3", "integration.issue", "other", None)
    ]


def test_skips_until_the_receiver_has_created_the_inbox(instance, duck_path):
    result = evaluate(instance, duck_path)
    assert "No webhook inbox" in result.skip_message and result.cursor is None


def test_busy_warehouse_skips_without_moving_the_cursor(instance, inbox_path, duck_path, monkeypatch):
    receive(inbox_path, LOW_BALANCE, CREDIT_ENDING)

    def locked(*args, **kwargs):
        raise duckdb.IOException('Could not set lock on file "retention.duckdb": Conflicting lock is held')

    monkeypatch.setattr(duckdb, "connect", locked)
    cursor = f"{inbox_id(inbox_path)}:1:evt-low-1"
    result = evaluate(instance, duck_path, cursor=cursor)
    assert result.run_requests == [] and "busy" in result.skip_message
    assert result.cursor == cursor


def delete(path):
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def copy(source, target):
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def deleted_and_recreated(inbox_path, backup, monkeypatch):
    delete(inbox_path)


def moved_to_another_path(inbox_path, backup, monkeypatch):
    monkeypatch.setenv("RETENTION_WEBHOOK_INBOX", str(inbox_path.with_name("new-volume.sqlite3")))


def restored_from_an_older_copy(inbox_path, backup, monkeypatch):
    delete(inbox_path)
    copy(backup, inbox_path)


@pytest.mark.parametrize(
    "recreate", [deleted_and_recreated, moved_to_another_path, restored_from_an_older_copy]
)
def test_recreated_inbox_is_read_from_its_first_row(
    instance, inbox_path, duck_path, tmp_path, monkeypatch, recreate
):
    """Row numbers restart with the file: a cursor kept from the old file must not skip the new file's events, and
    the run they request must not reuse an earlier run key (the daemon would drop it)."""
    backup = tmp_path / "backup.sqlite3"
    receive(inbox_path, low_balance("evt-a1"))
    copy(inbox_path, backup)  # the older copy holds row 1 only
    first = evaluate(instance, duck_path)
    receive(inbox_path, low_balance("evt-a2"), low_balance("evt-a3"))
    second = evaluate(instance, duck_path, cursor=first.cursor)  # the cursor is now at row 3

    recreate(inbox_path, backup, monkeypatch)
    # Rows 1-3 of the new file (2-4 of the restored copy): the old cursor's row 3 now holds another event.
    receive(resolve_inbox_path(), low_balance("evt-b1"), low_balance("evt-b2"), low_balance("evt-b3"))
    third = evaluate(instance, duck_path, cursor=second.cursor)

    assert [row[0] for row in notifications(duck_path)] == [
        "evt-a1", "evt-a2", "evt-a3", "evt-b1", "evt-b2", "evt-b3"
    ]  # fmt: skip
    run_keys = [tick.run_requests[0].run_key for tick in (first, second, third)]
    assert len(set(run_keys)) == 3
    again = evaluate(instance, duck_path, cursor=third.cursor)
    assert again.run_requests == [] and "No notifications after" in again.skip_message


def test_cursor_from_before_inbox_identities_rereads_without_duplicates(instance, inbox_path, duck_path):
    """An inbox without identity and a bare row-number cursor left by the previous version: the sensor gives the
    inbox an identity and reads it from row 0; what was already copied is not stored twice."""
    receive(inbox_path, LOW_BALANCE, INTEGRATION_ISSUE, CREDIT_ENDING)
    # What the previous version had copied (rows 1 and 2), then its inbox, which had no identity.
    store_notifications(duck_path, Inbox(inbox_path).read_after(None, 2)[1])
    with sqlite3.connect(inbox_path) as con:
        con.execute("DROP TABLE inbox_identity")

    result = evaluate(instance, duck_path, cursor="2")
    assert [row[0] for row in notifications(duck_path)] == ["evt-credit-2", "evt-int-3", "evt-low-1"]
    assert result.cursor == f"{inbox_id(inbox_path)}:3:evt-credit-2"
    [run] = result.run_requests
    assert run.tags["notification_types"] == "credit.segment.end"


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
    merged = dg.Definitions.merge(
        jobs.defs, defs, STAND_INS, dg.Definitions(resources={"duckdb": DuckDBWarehouse()})
    )
    sensor = merged.get_repository_def().get_sensor_def("metronome_notifications_sensor")
    assert sensor.job_name == "hourly_retention" and sensor.minimum_interval_seconds == 30
