"""The segment engine: holdout stability, partition replacement, changes, and the size guard."""

import dataclasses
from datetime import datetime, timedelta

import pytest

from retention_pipeline.segments.fixtures import compute_with_features, prepare
from retention_pipeline.segments.project import SegmentError, load_segment, load_segments
from retention_pipeline.warehouse import DuckDBWarehouse

AS_OF = datetime(2026, 11, 20)
DROP = {"usage_7d": 10, "usage_prior_7d": 100, "wow_usage_change_pct": -90}


def accounts(n: int, start: int = 0) -> list[dict]:
    return [{"customer_id": f"acct{i:04d}", **DROP} for i in range(start, start + n)]


@pytest.fixture
def con(tmp_path):
    people = [
        {"customer_id": f"acct{i:04d}", "person_id": f"acct{i:04d}-p{j}", "marketing_consent": True}
        for i in range(2000)
        for j in range(2)
    ]
    with DuckDBWarehouse(path=str(tmp_path / "s.duckdb")).connect() as con:
        prepare(con, people)
        yield con


@pytest.fixture
def daily():
    return [s for s in load_segments() if s.cadence == "daily" or s.name == "do_not_retarget"]


def members(con, as_of=AS_OF, segment="usage_drop_wow"):
    return con.execute(
        "SELECT customer_id, person_id, is_holdout FROM segments.members WHERE segment = ? AND as_of = ? ORDER BY ALL",
        [segment, as_of],
    ).fetchall()


def test_holdout_is_deterministic_about_10_percent_and_shared_by_an_account(con, daily):
    compute_with_features(con, daily, "daily", AS_OF, accounts(1000))
    first = members(con)
    by_account = {}
    for customer, _person, holdout in first:
        by_account.setdefault(customer, set()).add(holdout)
    assert all(len(flags) == 1 for flags in by_account.values())  # every person of an account shares it
    held = sum(1 for flags in by_account.values() if True in flags)
    assert 70 <= held <= 130  # 10% of 1000, binomial bounds
    compute_with_features(con, daily, "daily", AS_OF, [])  # rebuilds the features partition (now empty)
    compute_with_features(con, daily, "daily", AS_OF + timedelta(days=1), accounts(1000))
    assert [r[2] for r in members(con, AS_OF + timedelta(days=1))] == [r[2] for r in first]


def test_rerunning_a_partition_replaces_it_with_the_same_members(con, daily):
    compute_with_features(con, daily, "daily", AS_OF, accounts(40))
    before = members(con)
    compute_with_features(con, daily, "daily", AS_OF, [])  # features partition rebuilt empty…
    compute_with_features(con, daily, "daily", AS_OF, accounts(40), override={"*"})  # …and back
    assert members(con) == before
    assert con.execute(
        "SELECT count(*) FROM segments.partitions WHERE segment = 'usage_drop_wow'"
    ).fetchone() == (1,)


def test_changes_between_consecutive_partitions(con, daily):
    compute_with_features(con, daily, "daily", AS_OF, accounts(40))
    stats = compute_with_features(con, daily, "daily", AS_OF + timedelta(days=1), accounts(40, start=5))
    drop = next(s for s in stats if s.segment == "usage_drop_wow")
    assert (drop.accounts, drop.entries, drop.exits, drop.previous_accounts) == (40, 5, 5, 40)
    changes = con.execute(
        "SELECT change, count(*) FROM segments.changes WHERE segment = 'usage_drop_wow' AND as_of = ? GROUP BY 1",
        [AS_OF + timedelta(days=1)],
    ).fetchall()
    assert dict(changes) == {"entered": 5, "exited": 5}


def test_size_guard_blocks_a_mass_change_and_a_drop_to_zero_unless_overridden(con, daily):
    compute_with_features(con, daily, "daily", AS_OF, accounts(40))
    day2, day3 = AS_OF + timedelta(days=1), AS_OF + timedelta(days=2)

    def guard(stats):
        return next(s for s in stats if s.segment == "usage_drop_wow")

    assert (
        guard(compute_with_features(con, daily, "daily", day2, accounts(100))).guard_status == "blocked"
    )  # +150%
    assert guard(
        compute_with_features(con, daily, "daily", day2, accounts(100), {"usage_drop_wow"})
    ).guard_status == ("overridden")
    assert guard(compute_with_features(con, daily, "daily", day3, [])).guard_reason == "fell to 0 from 100"
    small = [dataclasses.replace(s, guard_min_accounts=5) for s in daily]
    compute_with_features(con, small, "daily", AS_OF, accounts(4))
    assert (
        guard(compute_with_features(con, small, "daily", day2, accounts(8))).guard_status == "ok"
    )  # +4 accounts


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("cadence: monthly", "cadence"),
        ("cadence: daily\npurpose: nurture", "purpose"),
        ("cadence: daily\ndestinations: [snapchat]", "destinations"),  # unknown (tiktok is a destination now)
        ("cadence: daily\nholdout_pct: 120", "holdout_pct"),
        ("cadence: daily\nmax_change_pct: lots", "max_change_pct"),
        ("cadence: daily\ncolour: red", "unknown field"),
        ("cadence: daily\npurpose: suppress\nholdout_pct: 5", "holdout_pct"),
    ],
)
def test_invalid_config_names_the_file_and_field(tmp_path, header, field):
    path = tmp_path / "my_segment.sql"
    path.write_text(f"/*\ndescription: x\n{header}\n*/\nSELECT customer_id FROM features")
    with pytest.raises(SegmentError, match=rf"segments/my_segment\.sql: {field}"):
        load_segment(path)


def test_unknown_param_and_unknown_exclusion_are_load_errors(tmp_path):
    (tmp_path / "a.sql").write_text("/*\ndescription: x\ncadence: daily\n*/\nSELECT customer_id FROM features "
                                    "WHERE usage_7d > {{ floor }}")  # fmt: skip
    with pytest.raises(SegmentError, match=r"a\.sql: params: \{\{ floor \}\}"):
        load_segment(tmp_path / "a.sql")
    (tmp_path / "a.sql").write_text("/*\ndescription: x\ncadence: daily\nexclude: [ghost]\n*/\nSELECT 1")
    (tmp_path / "do_not_retarget.sql").write_text(
        "/*\ndescription: x\ncadence: hourly\npurpose: suppress\n*/\nSELECT customer_id FROM features"
    )
    with pytest.raises(SegmentError, match=r"a\.sql: exclude: 'ghost'"):
        load_segments(tmp_path)
