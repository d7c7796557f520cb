"""Runs every fixture in dbt_like_sql/segments/tests/: declared feature rows → expected membership."""

import dataclasses

import pytest
import yaml

from retention_pipeline.segments.fixtures import (
    covered_segments,
    fixture_files,
    missing_fixture_message,
    run_fixture,
)
from retention_pipeline.segments.project import load_segment, load_segments


@pytest.fixture(scope="module")
def segments_without_holdout():
    # Fixtures also assert audiences, which exclude holdout; holdout has its own tests.
    return [dataclasses.replace(s, holdout_pct=0) for s in load_segments()]


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.stem)
def test_fixture(path, segments_without_holdout):
    assert run_fixture(path, segments_without_holdout) == []


@pytest.mark.parametrize("segment", load_segments(), ids=lambda s: s.name)
def test_every_segment_has_a_fixture(segment):
    message = missing_fixture_message(segment, covered_segments())
    if message:
        pytest.fail(message, pytrace=False)


def test_a_segment_without_a_fixture_is_told_which_file_to_create_and_its_shape(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "quiet_accounts.sql").write_text(
        "/*\ndescription: x\ncadence: daily\n*/\nSELECT customer_id FROM features WHERE usage_7d = 0"
    )
    (tmp_path / "tests" / "other.yml").write_text(
        "as_of: 2026-11-20 00:00\naccounts: []\nexpect: {other: {}}\n"
    )
    segment = load_segment(tmp_path / "quiet_accounts.sql")
    message = missing_fixture_message(segment, covered_segments(tmp_path / "tests"))
    assert message.startswith("segment quiet_accounts (segments/quiet_accounts.sql:5) has no fixture")
    assert f"Create {tmp_path}/tests/quiet_accounts.yml (or add `quiet_accounts:` under `expect`" in message
    shape = yaml.safe_load(message.split("\n\n", 1)[1])  # the skeleton shown is a valid fixture for it
    assert set(shape) == {"as_of", "defaults", "accounts", "expect"}
    assert set(shape["expect"]) == {"quiet_accounts"}
    assert missing_fixture_message(segment, {"quiet_accounts"}) is None


def test_a_wrong_expectation_is_reported(tmp_path, segments_without_holdout):
    fixture = tmp_path / "wrong.yml"
    fixture.write_text(
        "as_of: 2026-11-20 00:00\naccounts:\n  - {customer_id: a, usage_7d: 60, usage_prior_7d: 100,"
        " wow_usage_change_pct: -40}\nexpect:\n  usage_drop_wow: {a: high}\n"
    )
    assert run_fixture(fixture, segments_without_holdout) == ["usage_drop_wow: a expected high, got low"]


def test_the_message_for_a_shipped_folder_names_the_file_from_the_repo_root():
    segment = next(s for s in load_segments() if s.name == "credits_low")
    assert "Create dbt_like_sql/segments/tests/credits_low.yml " in missing_fixture_message(segment, set())
