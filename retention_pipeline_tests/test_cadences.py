"""Cadences are defined once (retention_pipeline/cadences.py); the rest of the project takes them from there."""

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from retention_pipeline import cadences, partitions
from retention_pipeline.cadences import BY_NAME, NAMES
from retention_pipeline.models import project as model_project
from retention_pipeline.operations import jobs
from retention_pipeline.segments import project as segment_project


def test_names_finest_first():
    assert NAMES == ("hourly", "daily", "weekly")


@pytest.mark.parametrize("name", NAMES)
def test_keys_and_as_of_agree_with_dagster(name):
    cadence = BY_NAME[name]
    partitions_def = cadence.partitions_def
    assert partitions_def.fmt == cadence.key_format
    keys = partitions_def.get_partition_keys(current_time=datetime(2026, 3, 1, tzinfo=UTC))
    for key in [*keys[:3], *keys[-3:]]:
        window = partitions_def.time_window_for_partition_key(key)
        assert window.end - window.start == cadence.step
        assert cadence.key_to_as_of(key) == window.end
        assert cadence.as_of_to_key(window.end) == key
        assert cadence.as_of_to_key(window.end.replace(tzinfo=None)) == key


def test_partition_starts_and_formats_are_unchanged():
    assert partitions.HOURLY.get_first_partition_key() == "2026-01-01-00:00"
    assert partitions.DAILY.get_first_partition_key() == "2026-01-01"
    assert partitions.WEEKLY.get_first_partition_key() == "2026-01-04"  # the first Sunday
    assert {str(p.timezone) for p in partitions.BY_CADENCE.values()} == {"UTC"}


def test_partitions_and_loaders_use_the_one_definition():
    for name, cadence in BY_NAME.items():
        assert partitions.BY_CADENCE[name] is cadence.partitions_def
        assert partitions.STEP[name] == cadence.step
    assert model_project.CADENCES is NAMES
    assert segment_project.CADENCES is NAMES
    assert jobs.CADENCES is NAMES


def test_schedules_come_from_the_cadences():
    assert BY_NAME["hourly"].cron == "10 * * * *"
    assert BY_NAME["daily"].cron == "40 0 * * *"
    assert BY_NAME["weekly"].cron == "10 2 * * 0"  # the churn model's retraining, Sundays
    # The job schedules resolve against the assets' partitions (test_definitions checks their crons): the offsets.
    for schedule, name in ((jobs.hourly_schedule, "hourly"), (jobs.daily_schedule, "daily")):
        offsets = BY_NAME[name].schedule_offsets
        assert {field: getattr(schedule, field) for field in offsets} == offsets
        assert schedule.name == f"{name}_retention_schedule"


def test_unknown_cadence_names_the_known_ones():
    with pytest.raises(KeyError, match="hourly, daily, weekly"):
        cadences.cadence("monthly")


def test_cadences_import_no_dagster():
    """The model and segment loaders (the sql and preview commands) read cadences without importing Dagster."""
    probe = "import sys, retention_pipeline.cadences; assert 'dagster' not in sys.modules, 'dagster imported'"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
