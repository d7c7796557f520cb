"""Runs every fixture in dbt_like_sql/segments/tests/: declared feature rows → expected membership."""

import dataclasses

import pytest

from retention_pipeline.segments.fixtures import fixture_files, run_fixture
from retention_pipeline.segments.project import load_segments


@pytest.fixture(scope="module")
def segments_without_holdout():
    # Fixtures also assert audiences, which exclude holdout; holdout has its own tests.
    return [dataclasses.replace(s, holdout_pct=0) for s in load_segments()]


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.stem)
def test_fixture(path, segments_without_holdout):
    assert run_fixture(path, segments_without_holdout) == []


def test_there_are_fixtures_for_every_shipped_segment():
    text = "".join(p.read_text() for p in fixture_files())
    for segment in load_segments():
        assert f"{segment.name}:" in text, segment.name


def test_a_wrong_expectation_is_reported(tmp_path, segments_without_holdout):
    fixture = tmp_path / "wrong.yml"
    fixture.write_text(
        "as_of: 2026-11-20 00:00\naccounts:\n  - {customer_id: a, usage_7d: 60, usage_prior_7d: 100,"
        " wow_usage_change_pct: -40}\nexpect:\n  usage_drop_wow: {a: high}\n"
    )
    assert run_fixture(fixture, segments_without_holdout) == ["usage_drop_wow: a expected high, got low"]
