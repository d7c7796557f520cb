"""`preview SEGMENT`: who the segment's current SQL would add and remove against its newest computed partition,
people per destination after holdout, suppression and consent, and sample members — without writing anything."""

import dataclasses
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from retention_pipeline.cli import main
from retention_pipeline.operations.publish import published_path
from retention_pipeline.segments.fixtures import compute_with_features, prepare
from retention_pipeline.segments.project import SEGMENTS_ROOT, load_segments
from retention_pipeline.warehouse import DuckDBWarehouse, resolve_duckdb_path


@pytest.fixture
def segments_copy(tmp_path) -> Path:
    root = tmp_path / "segments"
    shutil.copytree(SEGMENTS_ROOT, root)
    return root


DAY1, DAY2 = datetime(2026, 11, 19), datetime(2026, 11, 20)
BASE = {"usage_7d": 100, "usage_prior_7d": 100, "wow_usage_change_pct": 0, "days_since_last_usage": 0,
        "has_failed_payment": False, "is_archived": False, "renewed_14d": False, "do_not_retarget": False}  # fmt: skip


def account(i: int, **features) -> dict:
    return {**BASE, "customer_id": f"acct{i:03d}", **features}


def build_database(path: Path) -> None:
    """Two daily partitions computed by the engine. As of DAY2: acct003–013 and acct020 dropped 90% week over week
    (acct020 is archived, so suppressed), acct014–016 dropped 10%; one person per account, without marketing consent
    at every fourth account."""
    dropping = {"usage_7d": 10, "wow_usage_change_pct": -90}
    day1 = [account(i, **dropping) for i in range(10)] + [account(i) for i in range(10, 20)]
    day2 = [account(i, **dropping) for i in range(3, 14)]
    day2 += [account(i, usage_7d=90, wow_usage_change_pct=-10) for i in range(14, 17)]
    day2 += [account(i) for i in range(17, 20)] + [account(20, is_archived=True, **dropping)]
    people = [{"customer_id": f"acct{i:03d}", "person_id": f"p{i}", "marketing_consent": i % 4 != 0}
              for i in range(21)]  # fmt: skip
    segments = [dataclasses.replace(s, holdout_pct=0) for s in load_segments()]
    segments = [s for s in segments if s.cadence == "daily" or s.purpose == "suppress"]
    with DuckDBWarehouse(path=str(path)).connect() as con:
        prepare(con, people)
        compute_with_features(con, segments, "daily", DAY1, day1)
        compute_with_features(con, segments, "daily", DAY2, day2)


@pytest.fixture
def published(tmp_path) -> Path:
    path = published_path()
    build_database(path)
    return path


def no_holdout(root: Path, **params) -> None:
    """usage_drop_wow in `root` without holdout (so sizes are exact) and with the given thresholds."""
    path = root / "usage_drop_wow.sql"
    text = path.read_text().replace("holdout_pct: 10", "holdout_pct: 0")
    for name, value in params.items():
        text = text.replace(f"  {name}: ", f"  {name}: {value}  # was ")
    path.write_text(text)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


def test_preview_shows_entries_exits_destination_sizes_and_samples_and_writes_nothing(
    published, segments_copy, capsys
):
    no_holdout(segments_copy, drop_pct=-10)  # an edit not yet computed: acct014–016 would enter
    before = snapshot(published.parent)
    assert main(["preview", "usage_drop_wow", "--root", str(segments_copy)]) == 0
    out = capsys.readouterr().out
    assert "usage_drop_wow (daily, target) as of 2026-11-20 00:00" in out
    assert "15 accounts, 15 people, 0 accounts held out (0%)" in out
    assert "vs its newest computed partition (daily 2026-11-19, as of 2026-11-20 00:00, 12 accounts): " \
           "3 would enter, 0 would exit" in out  # fmt: skip
    sizes = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip().split()[:1] in (
        ["customerio"], ["meta"], ["google"])}  # fmt: skip
    # Customer.io: everyone; ad platforms: not acct020 (suppressed) nor the 4 other accounts without consent.
    # The last column is what the latest computed partition routes now (12 accounts; 8 for ads).
    assert sizes == {"customerio": ["15", "15", "12"], "google": ["10", "10", "8"], "meta": ["10", "10", "8"]}
    sample = out.split("Sample members (10 of 15; entering first):")[1].splitlines()
    assert sample[1].split()[0] == "customer_id"
    assert [line.split()[0] for line in sample[2:5]] == ["acct014", "acct015", "acct016"]
    assert all(line.rstrip().endswith("enters") for line in sample[2:5])
    assert "wow=-10%" in sample[2] and sample[5].rstrip().endswith("stays")
    assert len([line for line in sample[2:] if line.strip().startswith("acct")]) == 10
    assert snapshot(published.parent) == before  # same files, bytes and mtimes: no WAL, nothing written


def test_preview_of_a_stricter_rule_shows_who_would_exit_and_can_read_an_older_partition(
    published, segments_copy, capsys
):
    no_holdout(segments_copy, drop_pct=-95)
    assert main(["preview", "usage_drop_wow", "--root", str(segments_copy)]) == 0
    assert "0 would enter, 12 would exit" in capsys.readouterr().out
    assert main(["preview", "usage_drop_wow", "--as-of", "2026-11-19", "--root", str(segments_copy)]) == 0
    assert "as of 2026-11-19 00:00" in capsys.readouterr().out
    assert main(["preview", "usage_drop_wow", "--as-of", "2026-11-25", "--root", str(segments_copy)]) == 1
    assert "no daily rows as of 2026-11-25 00:00 (newest: 2026-11-20 00:00)" in capsys.readouterr().err


def test_preview_of_an_unknown_segment_names_the_nearest(published, capsys):
    assert main(["preview", "usage_drop"]) == 2
    assert (
        "no segment 'usage_drop'" in (err := capsys.readouterr().err)
        and 'did you mean "usage_drop_wow"?' in err
    )


def test_preview_reports_a_rule_that_fails_with_its_file_and_line(published, segments_copy, capsys):
    path = segments_copy / "usage_drop_wow.sql"
    path.write_text(path.read_text().replace("usage_prior_7d > 0", "usage_prior7d > 0"))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "usage_prior7d" in text)
    assert main(["preview", "usage_drop_wow", "--root", str(segments_copy)]) == 1
    assert f'usage_drop_wow.sql:{line}: column "usage_prior7d" not found in features; did you mean "usage_prior_7d"?' \
           in capsys.readouterr().err  # fmt: skip


def test_preview_live_reads_the_working_file_and_a_missing_file_is_a_clear_error(capsys):
    assert main(["preview", "usage_drop_wow", "--live"]) == 2
    assert "does not exist yet" in capsys.readouterr().err
    build_database(resolve_duckdb_path())
    before = snapshot(resolve_duckdb_path().parent)
    assert main(["preview", "usage_drop_wow", "--live"]) == 0
    assert "12 accounts" in capsys.readouterr().out
    assert snapshot(resolve_duckdb_path().parent) == before
    assert (
        main(["preview", "usage_drop_wow", "--as-of", str(DAY1 + timedelta(days=9))]) == 2
    )  # no published copy
