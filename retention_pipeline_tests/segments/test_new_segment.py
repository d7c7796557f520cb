"""`new-segment` scaffolds a segment (every header field, a starter SELECT over `features` with tier and reason) and
its fixture; the segment loads, binds and passes its fixture as written, in a copy of dbt_like_sql/segments."""

import dataclasses
import shutil
from pathlib import Path

import pytest

from retention_pipeline import catalog
from retention_pipeline.cli import main
from retention_pipeline.destinations.routing import load_routing, routing_problems
from retention_pipeline.models.definitions import MODELS
from retention_pipeline.segments.fixtures import covered_segments, run_fixture
from retention_pipeline.segments.project import SEGMENTS_ROOT, load_segments

# What segment SQL may read, as definitions load sees it: the models and the tables other assets write (scores).
KNOWN_TABLES = set(catalog.upstream_of("segments").producers())


@pytest.fixture
def segments_copy(tmp_path) -> Path:
    root = tmp_path / "segments"
    shutil.copytree(SEGMENTS_ROOT, root)
    return root


def test_new_segment_scaffolds_a_segment_that_loads_binds_and_passes_its_fixture(segments_copy, capsys):
    assert main(["new-segment", "usage_gone_quiet", "--cadence", "daily", "--destinations", "customerio",
                 "--root", str(segments_copy)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    sql, fixture = segments_copy / "usage_gone_quiet.sql", segments_copy / "tests" / "usage_gone_quiet.yml"
    assert f"Created {sql}" in out and f"Created {fixture}" in out
    assert "preview usage_gone_quiet" in out and "-k usage_gone_quiet" in out
    header = sql.read_text().split("*/")[0]
    for field in ("description", "cadence", "purpose", "destinations", "exclude", "holdout_pct", "min_size",
                  "max_change_pct", "guard_min_accounts", "params"):  # fmt: skip
        assert f"\n{field}:" in header, field

    segments = load_segments(segments_copy, known_tables=KNOWN_TABLES, models=MODELS)
    new = next(s for s in segments if s.name == "usage_gone_quiet")
    assert (new.cadence, new.purpose, new.destinations) == ("daily", "target", ("customerio",))
    assert "usage_gone_quiet" in covered_segments(segments_copy / "tests")
    without_holdout = [
        dataclasses.replace(s, holdout_pct=0) for s in segments
    ]  # as test_segment_fixtures runs them
    assert run_fixture(fixture, without_holdout) == []
    assert run_fixture(fixture) == []  # and with the segments as loaded from the folder
    assert not routing_problems(segments, load_routing())  # Customer.io manual segments are optional


def test_new_segment_refuses_to_overwrite_and_validates_its_arguments(segments_copy, capsys):
    args = ["--cadence", "hourly", "--root", str(segments_copy)]
    before = (segments_copy / "credits_low.sql").read_text()
    assert main(["new-segment", "credits_low", "--destinations", "customerio", *args]) == 1
    assert "credits_low.sql already exists; nothing written" in capsys.readouterr().err
    assert (segments_copy / "credits_low.sql").read_text() == before
    assert main(["new-segment", "Credits-Low", "--destinations", "customerio", *args]) == 2
    assert "must be snake_case" in capsys.readouterr().err
    assert main(["new-segment", "x_segment", "--destinations", "snapchat", *args]) == 2
    assert (
        "'snapchat' is not one of customerio, meta, google, tiktok, pinterest, warehouse"
        in capsys.readouterr().err
    )
    assert main(["new-segment", "x_segment", *args]) == 2  # a target segment goes somewhere
    assert main(["new-segment", "x_segment", "--purpose", "suppress", "--destinations", "meta", *args]) == 2
    assert sorted(p.name for p in segments_copy.glob("x_segment*")) == []
    assert main(["new-segment", "x_segment", "--purpose", "suppress", *args]) == 0
    assert load_segments(segments_copy)[-1].name == "x_segment"


def test_new_segment_routed_to_google_says_which_destinations_entry_to_add(segments_copy, capsys):
    assert main(["new-segment", "big_spenders", "--cadence", "daily", "--destinations", "customerio,meta,google",
                 "--root", str(segments_copy)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    # Data Manager cannot create user lists: the id must be added. Meta's API creates its audience on the first sync.
    assert 'google:\n       user_lists:\n         big_spenders: "<id>"' in out
    assert "meta:" not in out and "Customer.io, Meta: the first sync creates the audience" in out
    problems = routing_problems(load_segments(segments_copy), load_routing())
    assert [p.split(": routed")[0] for p in problems] == [
        "segments/big_spenders.sql:5"
    ]  # the `destinations:` line
    assert "routed to google but destinations.yaml has no google.user_lists.big_spenders" in problems[0]


GUIDE = Path(__file__).resolve().parents[2] / "docs" / "adding-a-segment.md"


def test_the_guides_example_segment_and_fixture_load_and_pass(segments_copy):
    """docs/adding-a-segment.md's worked example (the ```sql rule and the ```yaml fixture) is a real segment that
    binds against the features and passes its own fixture, so the guide cannot teach a rule that does not work."""
    text = GUIDE.read_text()
    sql = text.split("```sql\n", 1)[1].split("```", 1)[0]
    fixture = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    (segments_copy / "trial_stalled.sql").write_text(sql)
    (segments_copy / "tests" / "trial_stalled.yml").write_text(fixture)

    segments = load_segments(segments_copy, known_tables=KNOWN_TABLES, models=MODELS)
    assert "trial_stalled" in {s.name for s in segments}
    without_holdout = [dataclasses.replace(s, holdout_pct=0) for s in segments]
    assert run_fixture(segments_copy / "tests" / "trial_stalled.yml", without_holdout) == []
