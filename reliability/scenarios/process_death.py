"""`kill -9` at random points of extraction and of sync, then a normal run.

Extraction and sync run in a child process (the daily job through `execute_in_process`, as a worker would), which
is SIGKILLed when the Metronome or destination proxies have seen a seeded-random number of requests, plus a random
few hundred milliseconds so some kills land in DuckDB writes rather than HTTP calls. After every kill the DuckDB
file must open and every raw table must hold either nothing or the complete truth (never half a snapshot); after
the last kill one normal run must bring the raw tables to the truth and the destinations to the desired state,
with every Customer.io event accepted once and no item acknowledged twice.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import duckdb

from reliability.report import Row
from reliability.workspace import (
    ACTIVATION_HISTORY_DAYS,
    AD_BATCH,
    DAY,
    RAW_DAILY,
    SYNC_DAILY,
    Child,
    Suite,
    Workspace,
    daily_usage_window,
    upstream_of,
)

GROUP = "Process death (kill -9)"
SYNC_DAYS = ["2026-11-18", "2026-11-19"]


def _kill_when(child: Child, count, threshold: int, extra_delay: float, deadline_s: float = 120) -> bool:
    """SIGKILL once `count()` reaches the threshold (plus a delay); False if the child finished first."""
    started = time.monotonic()
    while child.alive():
        if count() >= threshold:
            time.sleep(extra_delay)
            if not child.alive():
                break
            child.kill()
            return True
        if time.monotonic() - started > deadline_s:
            child.kill()
            return True
        time.sleep(0.005)
    child.wait()
    return False


def _step_started(child: Child) -> int:
    """1 once the child's log shows the sync step started (the in-process executor logs STEP_START)."""
    return int("sync__activation_daily - STEP_START" in child.log.read_text(errors="replace"))


def _opens(ws: Workspace) -> str | None:
    """None when the DuckDB file (if any) opens and answers; else the error."""
    if not ws.db.exists():
        return None
    try:
        with duckdb.connect(str(ws.db), read_only=True) as con:
            con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()
    except duckdb.Error as exc:
        return str(exc)
    return None


def _partial_tables(ws: Workspace) -> list[str]:
    return ws.raw_check([daily_usage_window(ws.history_days)]).partial() if ws.db.exists() else []


def extraction(suite: Suite, kills: int, rng: random.Random) -> Row:
    row = Row(GROUP, f"kill -9 during extraction (daily job's raw assets), ×{kills}, then a normal run")
    ws = suite.workspace("kill-extraction")
    expected_requests = suite.extraction_requests
    landed, finished_first, corrupt, partial = 0, 0, [], []
    attempts = 0
    while landed < kills and attempts < kills * 3:
        attempts += 1
        before = suite.proxy.count()
        threshold = rng.randint(1, max(2, expected_requests - 1))
        delay = rng.choice([0.0, rng.uniform(0, 0.3)])
        child = ws.spawn("daily_retention", DAY, RAW_DAILY)
        if _kill_when(child, lambda b=before: suite.proxy.count() - b, threshold, delay):
            landed += 1
        else:
            finished_first += 1
        if error := _opens(ws):
            corrupt.append(error)
        partial += _partial_tables(ws)
    row.injections = landed
    outcome = ws.run("daily_retention", DAY, RAW_DAILY)
    check = ws.raw_check(
        [daily_usage_window(ws.history_days)], contacts_rows=len(suite.tenant.contacts_frame())
    )
    recovered = outcome.success and check.equal and not corrupt and not partial
    row.case(recovered, lost=check.lost, duplicates=check.duplicates, message=outcome.message or None)
    row.note(
        f"kills at request 1..{expected_requests} (+0-300 ms); {finished_first} run(s) finished before the kill"
    )
    row.note("file opened after every kill" if not corrupt else f"{len(corrupt)} corrupt: {corrupt[0][:100]}")
    row.note("no half-written table seen" if not partial else f"half-written: {partial[0][:120]}")
    row.metrics.update({"kills": landed, "corrupt_opens": len(corrupt), "partial_tables": len(partial)})
    ws.close()
    return row


@dataclass
class _SyncKills:
    landed: int = 0
    finished_first: int = 0
    planned: int = 0
    unacknowledged: int = 0
    dropped: int = 0
    duplicates: int = 0
    diverged: int = 0
    syncs: int = 0
    corrupt: list[str] = field(default_factory=list)
    unconverged: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # audiences / lists created, then lost track of
    findings: set[str | None] = field(
        default_factory=set
    )  # what explains each unconverged sync (None: nothing)


def _left(ws: Workspace, destination: str | None) -> tuple[int, int]:
    """(items, units of work) the next daily sync would send: segment × destination pairs for the whole sync, or
    for one destination the requests of AD_BATCH items its plan still needs."""
    if destination is None:
        return ws.plan_size("daily")
    plan = ws.plan("daily")
    items = sum(n for (_, dst, _), n in plan.items() if dst == destination)
    return items, sum(-(-n // AD_BATCH) for (_, dst, _), n in plan.items() if dst == destination)


def _kill_until_done(
    ws: Workspace, day: str, due: int, rng: random.Random, stats: _SyncKills, destination: str | None = None
) -> None:
    """Kill the day's sync at random points while it has work left and kills are due; then a normal sync that must
    converge with no duplicate effect. With `destination`, every kill lands at a random one of the requests that
    destination's part of the plan still needs (+0-300 ms), i.e. in the middle of its uploads."""
    d = ws.destinations
    items, work = _left(ws, destination)
    stats.planned += items
    today = 0
    while today < due and work:
        before = d.sends(destination)
        child = ws.spawn("daily_retention", day, SYNC_DAILY)
        if destination is not None or rng.random() < 0.5:
            # at a request of the plan still to send, or a moment after it (acks, ledger)
            count, threshold = (lambda b=before: d.sends(destination) - b), rng.randint(1, work)
            delay = rng.choice([0.0, rng.uniform(0, 0.3)])
        else:  # anywhere in the sync step's first second: planning, intents, sends, acks
            count, threshold, delay = (lambda c=child: _step_started(c)), 1, rng.uniform(0, 1.0)
        if _kill_when(child, count, threshold, delay):
            today += 1
        else:
            stats.finished_first += 1
        if error := _opens(ws):
            stats.corrupt.append(error)
        work = _left(ws, destination)[1]
    stats.landed += today
    outcome = ws.run("daily_retention", day, SYNC_DAILY)
    check = ws.destination_check("daily")
    stats.syncs += 1
    stats.duplicates += check.duplicates
    stats.diverged += check.diverged + check.pending
    stats.dropped += check.dropped_duplicate_events
    stats.unacknowledged += ws.query(
        "SELECT count(*) FROM sync.ledger_items WHERE status = 'unacknowledged'"
    )[0][0]
    stats.orphans += check.orphans
    if not (outcome.success and check.converged and check.duplicates == 0):
        stats.unconverged.append(f"{day}: {outcome.message or '; '.join(check.details)}"[:300])
        # A kill between a Pinterest list's creation (in the send) and its recording, after the sends (F18).
        stats.findings.add("F18" if outcome.success and check.only("pinterest") else None)


def sync(suite: Suite, kills: int, rng: random.Random, days: list[str]) -> Row:
    """Two consecutive days in one workspace (the first sync adds everyone; the second removes leavers, adds
    joiners and updates attributes), each killed while it has work left; then, until every kill is spent, rounds
    from the prepared daily file with fresh destinations (a first sync: the whole plan to interrupt)."""
    from reliability.scenarios.destinations import prepare_base

    stats = _SyncKills()
    ws = suite.workspace("kill-sync", history_days=ACTIVATION_HISTORY_DAYS, destinations=True)
    for day in days:
        prepared = ws.run("daily_retention", day, upstream_of("daily_retention", SYNC_DAILY[0]))
        if not prepared.success:
            stats.unconverged.append(f"preparing {day} failed: {prepared.message}"[:200])
            break
        _kill_until_done(ws, day, -(-(kills - stats.landed) // 2), rng, stats)
    ws.close()
    rounds = 0
    while stats.landed < kills and not stats.unconverged and rounds < kills:
        prepare_base(suite)
        rounds += 1
        ws = suite.workspace("kill-sync-round", history_days=ACTIVATION_HISTORY_DAYS, destinations=True)
        ws.adopt_db(suite.base_daily)
        _kill_until_done(ws, DAY, kills - stats.landed, rng, stats)
        ws.close()
    row = Row(GROUP, f"kill -9 during sync (daily activation), ×{stats.landed}, then a normal run")
    row.injections = stats.landed
    complete = stats.landed >= kills
    row.case(
        not stats.corrupt and not stats.unconverged and complete,
        lost=stats.diverged,
        duplicates=stats.duplicates,
        message=stats.unconverged[0]
        if stats.unconverged
        else None
        if complete
        else f"only {stats.landed} kills",
        finding=_finding(stats),
    )
    row.note(
        f"{len(days)} consecutive day(s) + {rounds} first-sync round(s), {stats.planned} changes planned; kills at a "
        f"random request of the remaining plan (+0-300 ms) or 0-1 s into the sync step; {stats.finished_first} "
        "sync(s) finished before their kill point"
    )
    row.note(
        f"{stats.unacknowledged} item(s) re-planned after a kill; {stats.dropped} resent event(s) dropped by id"
    )
    row.note(
        f"each of {stats.syncs} normal syncs converged, no duplicate"
        if not stats.unconverged
        else f"not converged: {stats.unconverged[0]}"
    )
    if stats.corrupt:
        row.note(f"{len(stats.corrupt)} corrupt opens: {stats.corrupt[0][:100]}")
    if stats.orphans:
        row.note(f"untracked objects left: {'; '.join(stats.orphans)[:160]}")
    row.metrics.update(
        {"kills": stats.landed, "corrupt_opens": len(stats.corrupt), "resent_events_dropped": stats.dropped}
    )
    return row


LABELS = {"tiktok": "TikTok audience uploads", "pinterest": "Pinterest customer list uploads"}


def _finding(stats: _SyncKills) -> str | None:
    """The open finding that explains every unconverged sync, if one does (a corrupt file never is)."""
    return "F18" if stats.findings == {"F18"} and not stats.corrupt else None


def destination_sync(suite: Suite, destination: str, kills: int, rng: random.Random) -> Row:
    """Kills aimed at one destination's uploads (TikTok, Pinterest: objects the pipeline creates, uploads of
    AD_BATCH people per request): rounds from the prepared daily file with fresh destinations (a first sync, so the
    object is created in the killed run too), each killed at a random one of that destination's remaining requests
    until its plan is done or the kills are spent, then a normal sync that must converge with no duplicate and no
    untracked object holding people."""
    from reliability.scenarios.destinations import prepare_base

    stats = _SyncKills()
    rounds = 0
    while stats.landed < kills and not stats.unconverged and rounds < kills:
        prepare_base(suite)
        rounds += 1
        ws = suite.workspace(f"kill-{destination}", history_days=ACTIVATION_HISTORY_DAYS, destinations=True)
        ws.adopt_db(suite.base_daily)
        _kill_until_done(ws, DAY, kills - stats.landed, rng, stats, destination)
        ws.close()
    row = Row(GROUP, f"kill -9 during {LABELS[destination]} (mid-batch), ×{stats.landed}, then a normal run")
    row.injections = stats.landed
    complete = stats.landed >= kills
    row.case(
        not stats.corrupt and not stats.unconverged and complete,
        lost=stats.diverged,
        duplicates=stats.duplicates,
        message=stats.unconverged[0]
        if stats.unconverged
        else None
        if complete
        else f"only {stats.landed} kills",
        finding=_finding(stats),
    )
    row.note(
        f"{rounds} first-sync round(s), {stats.planned} {destination} changes planned; kills at a random one of "
        f"its remaining requests ({AD_BATCH} people each, +0-300 ms); {stats.finished_first} sync(s) finished "
        "before their kill point"
    )
    row.note(f"{stats.unacknowledged} item(s) re-planned after a kill")
    row.note(
        f"each of {stats.syncs} normal syncs converged, no duplicate"
        if not stats.unconverged
        else f"not converged: {stats.unconverged[0]}"
    )
    if stats.orphans:
        row.note(f"untracked objects left: {'; '.join(stats.orphans)[:160]}")
    if stats.corrupt:
        row.note(f"{len(stats.corrupt)} corrupt opens: {stats.corrupt[0][:100]}")
    row.metrics.update({"kills": stats.landed, "corrupt_opens": len(stats.corrupt)})
    return row


def calibrate(suite: Suite) -> None:
    """How many Metronome requests a clean extraction makes (the range extraction kill points are drawn from)."""
    if suite.extraction_requests:
        return
    ws = suite.workspace("kill-calibration")
    before = suite.proxy.count()
    ws.run("daily_retention", DAY, RAW_DAILY)
    suite.extraction_requests = suite.proxy.count() - before
    ws.close()


def scenarios(suite: Suite, quick: bool, kills: int, seed: int) -> list[Row]:
    """--quick: one kill during extraction (the raw DuckDB writes) and one during Pinterest's uploads (a first sync
    killed mid-batch in a list the pipeline creates: the kill that found F18), each then a normal run; the whole-sync
    and TikTok kill rows run in the full suite only (a Customer.io kill is also in test_activation_e2e.py)."""
    rng = random.Random(seed)
    calibrate(suite)
    extraction_kills = max(1, kills // 2)
    sync_kills = max(1, kills - extraction_kills)
    rows = [extraction(suite, extraction_kills, rng)]
    suite.progress(rows[-1])
    if quick:
        rows.append(destination_sync(suite, "pinterest", sync_kills, rng))
        suite.progress(rows[-1])
        return rows
    rows.append(sync(suite, sync_kills, rng, SYNC_DAYS))
    suite.progress(rows[-1])
    for destination in LABELS:
        rows.append(destination_sync(suite, destination, max(1, kills // 4), rng))
        suite.progress(rows[-1])
    return rows
