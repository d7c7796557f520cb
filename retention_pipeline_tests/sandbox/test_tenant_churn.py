"""Churn in the sandbox tenant is learnable but noisy (docs/sandbox-churn.md), read back from its own arrays.

Every property is computed from the daily activity-metric usage (`daily[customer, 0, day]`) and the ground truth
the tenant exposes (profiles, churn_days, precursor_days, dips), never from the generator's constants: churners
fade before they stop (less usage, longer gaps), some stop abruptly, some non-churners dip and recover, churn
falls on many days of the history, rhythms differ, and the odds of churning follow traits a model can observe.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from retention_pipeline.sandbox.metronome import tenant as tenant_module
from retention_pipeline.sandbox.metronome.tenant import TenantSpec, build_tenant

NOW = datetime(2026, 3, 15, 10, 37, tzinfo=UTC)
SPEC = TenantSpec(seed=11, customers=1000, history_days=120, now=NOW)
WINDOW = 21  # three weeks: whole weeks, so a weekly schedule counts the same in every window
BEFORE = 42  # the earlier level is measured in [churn day - 63, churn day - 42)


@pytest.fixture(scope="module")
def tenant():
    return build_tenant(SPEC)


@pytest.fixture(scope="module")
def usage(tenant) -> np.ndarray:
    """Activity-metric usage per customer and complete day (today's partial day dropped)."""
    return tenant._core.daily[:, 0, :-1]


def index(tenant) -> dict[str, int]:
    return {cid: i for i, cid in enumerate(tenant.customer_ids)}


def today(usage: np.ndarray) -> int:
    return usage.shape[1]


def churn_index(tenant, usage: np.ndarray) -> dict[int, int]:
    """Customer index -> day index of its churn day (the first day without usage)."""
    where = index(tenant)
    return {where[cid]: today(usage) + offset for cid, offset in tenant.churn_days.items()}


def level(usage: np.ndarray, customer: int, end: int) -> tuple[float, float]:
    """(mean usage per day, mean gap in days between active days) over the WINDOW days before `end`."""
    days = usage[customer, end - WINDOW : end]
    active = int((days > 0).sum())
    return float(days.mean()), WINDOW / active if active else float(WINDOW)


def fade(usage: np.ndarray, customer: int, churn_day: int) -> tuple[float, float]:
    """(usage ratio, gap ratio): the last WINDOW days before churn against the same span BEFORE days earlier."""
    late_usage, late_gap = level(usage, customer, churn_day)
    early_usage, early_gap = level(usage, customer, churn_day - BEFORE)
    return late_usage / early_usage, late_gap / early_gap


def visible_churners(tenant, usage: np.ndarray) -> dict[int, int]:
    """Churners of the history whose two comparison windows both lie inside the history, used before."""
    return {
        i: day
        for i, day in churn_index(tenant, usage).items()
        if BEFORE + WINDOW <= day <= today(usage) and usage[i, day - BEFORE - WINDOW : day - BEFORE].sum() > 0
    }


def non_churners(tenant, usage: np.ndarray) -> list[int]:
    """Customers that never churn and used the product through the whole history."""
    churned = set(churn_index(tenant, usage))
    created = tenant._core.created_s
    start = int(tenant._core.grid_start.timestamp())
    return [i for i in range(len(tenant.customer_ids)) if i not in churned and created[i] < start]


def test_churners_fade_before_they_stop_and_non_churners_do_not(tenant, usage):
    """In the three weeks before churn usage falls and gaps lengthen, on average; steady customers hold level."""
    churners = visible_churners(tenant, usage)
    assert len(churners) >= 30
    ratios = np.array([fade(usage, i, day) for i, day in churners.items()])
    # Non-churners, compared over the same days as a churner of the median churn day.
    reference = int(np.median(list(churners.values())))
    others = [
        i
        for i in non_churners(tenant, usage)
        if tenant.profiles[tenant.customer_ids[i]] == "steady"
        and usage[i, reference - BEFORE - WINDOW : reference - BEFORE].sum() > 0
    ]
    baseline = np.array([fade(usage, i, reference) for i in others])
    assert np.median(ratios[:, 0]) < 0.75 < np.median(baseline[:, 0])
    assert np.exp(np.log(ratios[:, 0]).mean()) < 0.8 * np.exp(np.log(baseline[:, 0]).mean())
    # Gaps between active days lengthen before churn (the rhythm slows), not for the others.
    assert np.exp(np.log(ratios[:, 1]).mean()) > 1.2 * np.exp(np.log(baseline[:, 1]).mean())
    assert (ratios[:, 1] > 1.25).mean() > 2 * (baseline[:, 1] > 1.25).mean()


def test_precursors_are_the_rule_not_the_law(tenant, usage):
    """Most churners of the history fade first; some stop abruptly, at their usual level and rhythm."""
    churners = visible_churners(tenant, usage)
    ids = tenant.customer_ids
    faded = {i: day for i, day in churners.items() if ids[i] in tenant.precursor_days}
    abrupt = {i: day for i, day in churners.items() if ids[i] not in tenant.precursor_days}
    assert 0.5 <= len(faded) / len(churners) <= 0.9 and len(abrupt) >= 5
    abrupt_ratios = np.array([fade(usage, i, day)[0] for i, day in abrupt.items()])
    faded_ratios = np.array([fade(usage, i, day)[0] for i, day in faded.items()])
    assert 0.8 < np.median(abrupt_ratios) < 1.25
    assert np.median(faded_ratios) < 0.7
    # Abrupt churners really are abrupt: used on the last scheduled days, then nothing.
    last_week = np.array([usage[i, day - 7 : day].sum() > 0 for i, day in abrupt.items()])
    assert last_week.all()


def test_some_non_churners_dip_and_recover(tenant, usage):
    """False alarms: a week-over-week drop of 40% or more happens to non-churners too, who then recover."""
    days = today(usage)
    weekly = np.lib.stride_tricks.sliding_window_view(usage, 7, axis=1).sum(axis=2)  # [customer, end - 7]
    prior, last = weekly[:, :-7], weekly[:, 7:]
    drop = ((prior > 0) & (last <= 0.6 * prior)).any(axis=1)
    stayers = non_churners(tenant, usage)
    churners = list(visible_churners(tenant, usage))
    dropped_stayers = [i for i in stayers if drop[i]]
    assert len(dropped_stayers) >= 0.1 * len(stayers)
    assert drop[churners].mean() > 2 * drop[stayers].mean()  # a drop is evidence, not proof
    # The declared dips are real, and those customers come back to their level.
    where = index(tenant)
    recovered = []
    for cid, (start, end) in tenant.dips.items():
        assert cid not in tenant.churn_days
        i, start, end = where[cid], days + start, days + end
        if start < 21 or end + 21 > days or i not in stayers:
            continue
        weeks = start + 7 * ((end - start) // 7)  # whole weeks, so a weekly schedule counts the same
        spans = ((start - 21, start), (start, weeks), (end, end + 21))
        before, during, after = (usage[i, a:b].mean() for a, b in spans)
        assert during < 0.85 * before
        recovered.append(after >= 0.8 * before)
    assert len(recovered) >= 20 and np.mean(recovered) > 0.8


def test_churn_falls_on_many_days_of_the_history_and_some_is_under_way_now(tenant, usage):
    days = today(usage)
    offsets = np.array(list(tenant.churn_days.values()))
    history = offsets[(offsets >= -110) & (offsets <= -5)]
    weeks = set(history // 7)
    assert len(weeks) >= 14  # of the 15 weeks in [-110, -5]
    assert len(history) >= 0.08 * len(tenant.customer_ids)
    # Churn ahead: usage already falling in the last week, against the same customer two months earlier.
    where = index(tenant)
    ahead = [where[cid] for cid, offset in tenant.churn_days.items() if offset > 0]
    assert ahead and all(tenant.profiles[tenant.customer_ids[i]] == "churning" for i in ahead)
    falling = [usage[i, days - 7 :].sum() < 0.8 * usage[i, days - 63 : days - 49].sum() / 2 for i in ahead]
    assert np.mean(falling) > 0.8


def median_gap(active_days: np.ndarray) -> float:
    days = np.flatnonzero(active_days)
    return float(np.median(np.diff(days))) if len(days) >= 4 else float("nan")


def test_rhythms_vary_and_stay_regular_week_to_week(tenant, usage):
    stayers = non_churners(tenant, usage)
    gaps = np.array([median_gap(usage[i] > 0) for i in stayers])
    assert (gaps == 1).mean() > 0.4
    assert ((gaps >= 2) & (gaps < 3)).mean() > 0.05
    assert (gaps >= 3).mean() > 0.05 and (gaps >= 6).mean() > 0.02
    # Steady customers without a dip: a 40% week-over-week drop stays rare whatever their rhythm.
    ids = tenant.customer_ids
    steady = [i for i in stayers if tenant.profiles[ids[i]] == "steady" and ids[i] not in tenant.dips]
    weekly = np.lib.stride_tricks.sliding_window_view(usage[steady], 7, axis=1).sum(axis=2)
    prior, last = weekly[:, :-7], weekly[:, 7:]
    assert ((prior > 0) & (last <= 0.6 * prior)).mean() < 0.01


def test_churn_odds_follow_observable_traits_without_deciding_them(tenant, usage):
    """Sparser rhythms and lower volume churn more often, yet every kind of customer churns and stays.

    Among the customers whose profile is about churn or its absence, traits are read before any fade began."""
    ids = tenant.customer_ids
    pool = [
        i for i in range(len(ids)) if tenant.profiles[ids[i]] in ("steady", "lapsed", "archived", "churning")
    ]
    churn = churn_index(tenant, usage)
    rows = []
    for i in pool:
        end = churn.get(i, today(usage)) - BEFORE  # traits seen before any fade
        if end < 28:
            continue
        seen = usage[i, :end]
        rows.append((i in churn, median_gap(seen > 0), seen.mean()))
    churned, gap, volume = (np.array(column) for column in zip(*rows, strict=True))
    sparse, daily = gap >= 2, gap == 1
    assert churned[sparse].mean() > 1.3 * churned[daily].mean()
    low = volume <= np.median(volume)
    assert churned[low].mean() > churned[~low].mean()
    for group in (sparse, daily, low, ~low):
        assert 0 < churned[group].mean() < 1


def test_same_spec_same_churn():
    spec = TenantSpec(seed=3, customers=80, now=NOW)
    first = build_tenant(spec)
    tenant_module._build_core.cache_clear()
    second = build_tenant(spec)
    assert first._core is not second._core
    assert np.array_equal(first._core.daily, second._core.daily)
    for name in ("profiles", "rhythms", "churn_days", "precursor_days", "dips"):
        assert getattr(first, name) == getattr(second, name), name
    other = build_tenant(TenantSpec(seed=4, customers=80, now=NOW))
    assert other.churn_days != first.churn_days
