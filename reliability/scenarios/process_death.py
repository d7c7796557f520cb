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

import duckdb

from reliability.report import Row
from reliability.workspace import (
    ACTIVATION_HISTORY_DAYS,
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
SYNC_DAYS = [f"2026-11-{day}" for day in range(10, 20)]  # used from the first until the kills are done


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


def sync(suite: Suite, kills: int, rng: random.Random, days: list[str]) -> Row:
    """Day by day: the daily job up to its sync (a normal run), then the sync killed at random points for as long as
    it has work left and kills are due, then a normal sync that must converge with no duplicate effect."""
    ws = suite.workspace("kill-sync", history_days=ACTIVATION_HISTORY_DAYS, destinations=True)
    d = ws.destinations
    landed, finished_first, corrupt, unconverged, planned, used = 0, 0, [], [], [], []
    check = None
    for day in days:
        if landed >= kills:
            break
        prepared = ws.run("daily_retention", day, upstream_of("daily_retention", SYNC_DAILY[0]))
        if not prepared.success:
            unconverged.append(f"preparing {day} failed: {prepared.message}"[:200])
            break
        used.append(day)
        due = kills - landed  # as many as this day's work allows; the next day takes the rest
        items, pairs = ws.plan_size("daily")
        planned.append(items)
        today = 0
        while today < due and pairs:
            before = d.sends()
            threshold = rng.randint(1, pairs)  # a request of the plan still to send …
            delay = rng.choice([0.0, rng.uniform(0, 0.3)])  # … or a moment after it (acks, ledger, export)
            child = ws.spawn("daily_retention", day, SYNC_DAILY)
            if _kill_when(child, lambda b=before: d.sends() - b, threshold, delay):
                today += 1
            else:
                finished_first += 1
            if error := _opens(ws):
                corrupt.append(error)
            pairs = ws.plan_size("daily")[1]
        landed += today
        outcome = ws.run("daily_retention", day, SYNC_DAILY)
        check = ws.destination_check("daily")
        if not (outcome.success and check.converged and check.duplicates == 0):
            unconverged.append(f"{day}: {outcome.message or '; '.join(check.details)}"[:200])
    row = Row(
        GROUP, f"kill -9 during sync (daily activation), ×{landed} over {len(used)} day(s), then a normal run"
    )
    row.injections = landed
    diverged = (check.diverged + check.pending) if check else 0
    row.case(
        not corrupt and not unconverged and landed >= kills,
        lost=diverged,
        duplicates=check.duplicates if check else 0,
        message=unconverged[0]
        if unconverged
        else (None if landed >= kills else f"only {landed} of {kills} kills"),
    )
    unacked = ws.query("SELECT count(*) FROM sync.ledger_items WHERE status = 'unacknowledged'")[0][0]
    dropped = check.dropped_duplicate_events if check else 0
    row.note(
        f"{sum(planned)} changes planned over {len(used)} day(s); each kill at a random request of the remaining "
        f"plan (+0-300 ms); {finished_first} sync(s) finished before their kill point"
    )
    row.note(f"{unacked} item(s) re-planned after a kill; {dropped} resent event(s) dropped by their ids")
    row.note("converged every day, no duplicate" if not unconverged else f"not converged: {unconverged[0]}")
    if corrupt:
        row.note(f"{len(corrupt)} corrupt opens: {corrupt[0][:100]}")
    row.metrics.update({"kills": landed, "corrupt_opens": len(corrupt), "resent_events_dropped": dropped})
    ws.close()
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
    rng = random.Random(seed)
    calibrate(suite)
    extraction_kills = max(1, kills // 2)
    sync_kills = max(1, kills - extraction_kills)
    rows = [extraction(suite, extraction_kills, rng)]
    suite.progress(rows[-1])
    rows.append(sync(suite, sync_kills, rng, SYNC_DAYS[-2:] if quick else SYNC_DAYS))
    suite.progress(rows[-1])
    return rows
