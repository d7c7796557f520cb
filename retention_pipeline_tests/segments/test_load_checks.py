"""Definitions load rejects what used to fail mid-run: a segment's SQL that does not bind against the typed features
(file, line, nearest column) and a segment routed to a destination that cannot create its object (Google: Data
Manager cannot create user lists) without its id in destinations.yaml."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retention_pipeline.config import ConfigError
from retention_pipeline.destinations.routing import check_routing, load_routing, routing_problems
from retention_pipeline.models.definitions import MODELS
from retention_pipeline.segments.project import SEGMENTS_ROOT, SegmentError, bind_segments, load_segments

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def segments_copy(tmp_path) -> Path:
    root = tmp_path / "segments"
    shutil.copytree(SEGMENTS_ROOT, root)
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_every_shipped_segment_binds():
    bind_segments(load_segments(), MODELS)


def test_a_misspelt_feature_fails_at_load_with_file_line_and_nearest_column(segments_copy):
    path = segments_copy / "usage_drop_wow.sql"
    edit(path, "wow_usage_change_pct <= {{ drop_pct }}", "usage_wow_change_pct <= {{ drop_pct }}")
    line = line_of(path, "usage_wow_change_pct")
    load_segments(segments_copy)  # the header is valid: only binding can catch it
    with pytest.raises(SegmentError) as raised:
        load_segments(segments_copy, models=MODELS)
    assert str(raised.value) == (
        f'segments/usage_drop_wow.sql:{line}: column "usage_wow_change_pct" not found in features; '
        'did you mean "wow_usage_change_pct"?'
    )


def test_a_misspelt_column_of_a_referenced_model_is_suggested_from_that_model(segments_copy):
    (segments_copy / "renewing_soon.sql").write_text(
        textwrap.dedent("""\
            /*
            description: Accounts with a contract ending soon.
            cadence: daily
            destinations: [customerio]
            */
            SELECT f.customer_id
            FROM features AS f
            JOIN analytics.lifecycle_events AS e USING (customer_id)
            WHERE e.event_typ = 'contract.end'
        """)
    )
    with pytest.raises(SegmentError, match=r'renewing_soon\.sql:9: column "event_typ" not found in features or '
                                           r'analytics\.lifecycle_events; did you mean "event_type"\?'):  # fmt: skip
        load_segments(segments_copy, models=MODELS)


def test_other_binding_errors_and_a_missing_customer_id_name_the_file_and_line(segments_copy):
    path = segments_copy / "credits_low.sql"
    edit(path, "printf('%.1f days left'", "prinf('%.1f days left'")
    with pytest.raises(SegmentError, match=r'credits_low\.sql:\d+: Catalog Error: Scalar Function with name prinf '
                                           r'does not exist! Did you mean "printf"'):  # fmt: skip
        load_segments(segments_copy, models=MODELS)
    edit(path, "prinf(", "printf(")
    edit(path, "SELECT\n    customer_id,", "SELECT\n    customer_id AS account,")
    with pytest.raises(SegmentError, match=r"credits_low\.sql:\d+: must return a customer_id column"):
        load_segments(segments_copy, models=MODELS)


def routing_file(tmp_path: Path, **changes) -> Path:
    """destinations.yaml with some sections replaced."""
    import yaml

    spec = yaml.safe_load((REPO / "destinations.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        spec[section][key] = value
    path = tmp_path / "destinations.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_a_segment_routed_to_google_without_a_user_list_fails_naming_the_header_line(tmp_path):
    user_lists = {"usage_drop_wo": "1", "renewal_7d_low_activity": "3", "winback_lapsed_45_120": "4",
                  "churn_risk_high": "6", "overdue_vs_rhythm": "7"}  # fmt: skip
    routing = load_routing(str(routing_file(tmp_path, google__user_lists=user_lists)))
    segments = load_segments()
    problems = routing_problems(segments, routing)
    line = line_of(SEGMENTS_ROOT / "usage_drop_wow.sql", "destinations:")
    assert problems == [
        f"segments/credits_low.sql:{line_of(SEGMENTS_ROOT / 'credits_low.sql', 'destinations:')}: routed to google "
        f"but {routing.source} has no google.user_lists.credits_low (known: churn_risk_high, overdue_vs_rhythm, "
        "renewal_7d_low_activity, usage_drop_wo, winback_lapsed_45_120; Google's API cannot create it)",
        f"segments/usage_drop_wow.sql:{line}: routed to google but {routing.source} has no "
        "google.user_lists.usage_drop_wow (known: churn_risk_high, overdue_vs_rhythm, renewal_7d_low_activity, "
        'usage_drop_wo, winback_lapsed_45_120; Google\'s API cannot create it); is "usage_drop_wo" meant to be '
        "usage_drop_wow?",
    ]
    with pytest.raises(ConfigError, match="credits_low"):
        check_routing(segments, routing)


def test_destinations_whose_api_creates_the_object_need_no_id(tmp_path):
    """Meta, TikTok, Pinterest and Customer.io create a missing object on the first sync: no id is required."""
    changes = {"meta__audiences": {}, "tiktok__audiences": {}, "pinterest__customer_lists": {},
               "customerio__manual_segments": {}}  # fmt: skip
    check_routing(load_segments(), load_routing(str(routing_file(tmp_path, **changes))))


def test_customerio_manual_segments_are_optional_but_google_needs_its_account(tmp_path):
    segments = load_segments()
    check_routing(segments, load_routing(str(routing_file(tmp_path, customerio__manual_segments={}))))
    routing = load_routing(
        str(routing_file(tmp_path, google__operating_account={"accountType": "GOOGLE_ADS"}))
    )
    assert all(
        "routed to google but" in p and "google.operating_account {accountType, accountId}" in p
        for p in routing_problems(segments, routing)
    )
    check_routing(segments)  # the shipped destinations.yaml routes every segment


def load_definitions(env: dict[str, str], segments_root: Path | None = None) -> subprocess.CompletedProcess:
    """Import the project's definitions in a fresh interpreter (optionally with segments from another folder)."""
    code = "import retention_pipeline.definitions"
    if segments_root is not None:
        code = (
            f"import functools, pathlib\nimport retention_pipeline.segments.project as p\n"
            f"p.load_segments = functools.partial(p.load_segments, pathlib.Path({str(segments_root)!r}))\n{code}"
        )
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip


def test_definitions_load_fails_on_a_typo_and_on_missing_routing(segments_copy, tmp_path):
    winback = segments_copy / "winback_lapsed_45_120.sql"
    edit(winback, "days_since_last_usage BETWEEN", "days_since_last_use BETWEEN")
    loaded = load_definitions({}, segments_copy)
    assert loaded.returncode != 0
    assert (
        f"segments/winback_lapsed_45_120.sql:{line_of(winback, 'days_since_last_use BETWEEN')}: column "
        '"days_since_last_use" not found in features; did you mean "days_since_last_usage"?'
    ) in loaded.stderr

    user_lists = {"usage_drop_wow": "1", "credits_low": "2", "renewal_7d_low_activity": "3"}
    path = routing_file(tmp_path, google__user_lists=user_lists)
    loaded = load_definitions({"RETENTION_DESTINATIONS_CONFIG": str(path)})
    assert loaded.returncode != 0
    line = line_of(SEGMENTS_ROOT / "winback_lapsed_45_120.sql", "destinations:")
    assert (
        f"segments/winback_lapsed_45_120.sql:{line}: routed to google but {path} has no "
        "google.user_lists.winback_lapsed_45_120 (known: credits_low, renewal_7d_low_activity, usage_drop_wow; "
        "Google's API cannot create it)"
    ) in loaded.stderr
