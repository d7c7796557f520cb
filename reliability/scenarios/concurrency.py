"""Overlapping hourly and daily runs on one Dagster instance, with an analyst reading the published copy throughout.

A real instance: a temporary DAGSTER_HOME holding the repository's dagster_instance.yaml (the `duckdb` pool limited to 1).
Both jobs start at once through `dg launch --job … --partition …` from the repo root (the jobs' in-process
executor, as `make run` uses), each in its own process, while a third process queries the published copy in a loop. Lock
failures are counted in both runs' output and in the reader; the instance's pool is sampled while they run, so the
report says what serialized the writers: the pool (steps "blocked by limit for pool duckdb") or DuckDB's own lock
retry in the resource.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta

import dagster as dg

from reliability.report import Row
from reliability.workspace import (
    ACTIVATION_HISTORY_DAYS,
    DAY,
    DAY_END,
    HOUR,
    HOUR_END,
    REPO,
    SYNC_DAILY,
    SYNC_HOURLY,
    Suite,
    child_env,
)

GROUP = "Concurrency"
LOCK_ERRORS = re.compile(
    r"could not set lock|conflicting lock|database is locked|lock on file", re.IGNORECASE
)
READER = """
import json, sys, time, duckdb
from pathlib import Path
path, stop, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
reads, errors, lock_errors, samples = 0, 0, 0, []
while not stop.exists():
    try:
        with duckdb.connect(path, read_only=True) as con:
            con.execute("SELECT count(*) FROM raw.metronome_customers").fetchone()
            con.execute("SELECT segment, count(*) FROM segments.members GROUP BY 1").fetchall()
        reads += 1
    except Exception as exc:
        errors += 1
        text = str(exc)
        lock_errors += "lock" in text.lower()
        if len(samples) < 3:
            samples.append(text[:200])
    time.sleep(0.02)
out.write_text(json.dumps({"reads": reads, "errors": errors, "lock_errors": lock_errors, "samples": samples}))
"""


def scenario(suite: Suite) -> Row:
    row = Row(GROUP, "hourly and daily runs overlapping on one instance + an analyst reading throughout")
    ws = suite.workspace("concurrency", history_days=ACTIVATION_HISTORY_DAYS, destinations=True)
    home = ws.path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster_instance.yaml", home / "dagster.yaml")
    warm = ws.run("daily_retention", "2026-11-18")  # the analysts' copy exists before the overlap starts
    if not warm.success:
        row.case(False, message=f"warm-up run failed: {warm.message}")
        ws.close()
        return row
    # VIRTUAL_ENV as `make` exports it: dg warns when the active venv is not the project's .venv.
    env = child_env({**ws.env, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": str(REPO / ".venv")})
    stop, out = ws.path / "stop-reader", ws.path / "reader.json"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, ws.env["RETENTION_PUBLISHED_PATH"], str(stop), str(out)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    jobs = {"daily_retention": DAY, "hourly_retention": HOUR}
    logs = {job: (ws.path / f"{job}.log").open("w+") for job in jobs}
    started = time.monotonic()
    runs = {
        job: subprocess.Popen(
            [
                str(REPO / ".venv" / "bin" / "dg"),
                "launch",
                "--job",
                job,
                "--partition",
                partition,
            ],
            env=env,
            cwd=REPO,
            stdout=logs[job],
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for job, partition in jobs.items()
    }
    instance = dg.DagsterInstance.from_config(str(home))
    max_pending, max_claimed, both_alive = 0, 0, 0.0
    last = time.monotonic()
    while any(p.poll() is None for p in runs.values()):
        info = instance.event_log_storage.get_concurrency_info("duckdb")
        max_pending = max(max_pending, len(info.pending_steps))
        max_claimed = max(max_claimed, len(info.claimed_slots))
        now = time.monotonic()
        if all(p.poll() is None for p in runs.values()):
            both_alive += now - last
        last = now
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    stop.touch()
    reader.wait(30)
    reads = json.loads(out.read_text())
    lock_failures, blocked, failed = 0, 0, []
    for job, log in logs.items():
        log.seek(0)
        text = log.read()
        log.close()
        suite.transcript.add(f"concurrency {job}", text)
        lock_failures += len(LOCK_ERRORS.findall(text))
        blocked += text.count("blocked by limit for pool duckdb")
        if runs[job].returncode != 0:
            failed.append(job)
    suite.transcript.add("concurrency reader", reader.stderr.read() if reader.stderr else "")
    lock_failures += reads["lock_errors"]
    raw = ws.raw_check(
        [("DAY", DAY_END - timedelta(days=ACTIVATION_HISTORY_DAYS + 1), DAY_END),
         ("HOUR", datetime(2026, 11, 17, tzinfo=HOUR_END.tzinfo), HOUR_END)],
    )  # fmt: skip
    daily, hourly, followed = _converge(ws)
    converged = daily.converged and hourly.converged
    row.injections = 2
    row.case(
        not failed and lock_failures == 0 and reads["errors"] == 0 and raw.equal and converged,
        lost=raw.lost + daily.diverged + hourly.diverged,
        duplicates=raw.duplicates + daily.duplicates + hourly.duplicates,
        message=(f"failed: {', '.join(failed)}" if failed else None),
    )
    row.metrics.update({"lock_failures": lock_failures, "reader_reads": reads["reads"], "reader_errors": reads["errors"],
                        "steps_blocked_by_pool": blocked, "max_pending_steps": max_pending,
                        "overlap_seconds": round(both_alive, 1)})  # fmt: skip
    mechanism = (
        f"the duckdb pool serialized the writers ({blocked} step waits logged, up to {max_pending} pending)"
        if blocked or max_pending
        else "no pool wait observed: DuckDB's lock retry in the resource serialized the writers"
    )
    row.note(f"both runs {'succeeded' if not failed else 'FAILED: ' + ', '.join(failed)} in {elapsed:.0f} s, "
             f"overlapping {both_alive:.0f} s")  # fmt: skip
    row.note(f"lock failures {lock_failures}; analyst: {reads['reads']} reads of the published copy, "
             f"{reads['errors']} errors")  # fmt: skip
    row.note(mechanism)
    row.note(followed)
    if not raw.equal:
        row.note("raw: " + "; ".join(raw.details)[:150])
    if not converged:
        row.note("destinations: " + "; ".join(daily.details + hourly.details)[:150])
    if reads["samples"]:
        row.messages += reads["samples"]
    ws.close()
    return row


def _converge(ws):
    """The next scheduled sync of each cadence, then both checked. One cadence's run can change the other's desired
    state (the hourly run recomputes the do_not_retarget suppression the daily ad audiences honour), so what was
    left planned after the overlap is reported, and convergence is judged after those syncs."""
    left = {cadence: ws.plan(cadence) for cadence in ("daily", "hourly")}
    outcomes = [ws.run("daily_retention", DAY, SYNC_DAILY), ws.run("hourly_retention", HOUR, SYNC_HOURLY)]
    daily, hourly = ws.destination_check("daily"), ws.destination_check("hourly")
    failed = [o.message for o in outcomes if not o.success]
    if failed:
        daily.pending += 1
        daily.details.append(f"follow-up sync failed: {failed[0][:100]}")
    summary = {c: sum(p.values()) for c, p in left.items()}
    detail = "; ".join(
        f"{c}: " + ", ".join(f"{seg}/{dst} {op} {n}" for (seg, dst, op), n in sorted(p.items()))[:120]
        for c, p in left.items()
        if p
    )
    text = f"left planned after the overlap: daily {summary['daily']}, hourly {summary['hourly']}"
    text += f" ({detail})" if detail else ""
    if daily.converged and hourly.converged:
        text += "; converged after the next sync of each cadence"
    return daily, hourly, text


def without_instance(suite: Suite) -> Row:
    """The same overlap as two `execute_in_process` workers with ephemeral instances: no pool is shared, so only
    the DuckDB resource's lock retry (dagster-duckdb backoff, ~100 s) stands between the writers."""
    row = Row(
        GROUP, "hourly and daily `execute_in_process` workers overlapping, no shared instance + analyst"
    )
    ws = suite.workspace("concurrency-no-instance", history_days=ACTIVATION_HISTORY_DAYS, destinations=True)
    warm = ws.run("daily_retention", "2026-11-18")
    if not warm.success:
        row.case(False, message=f"warm-up run failed: {warm.message}")
        ws.close()
        return row
    stop, out = ws.path / "stop-reader", ws.path / "reader.json"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, ws.env["RETENTION_PUBLISHED_PATH"], str(stop), str(out)],
        env=child_env(ws.env), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    started = time.monotonic()
    children = [ws.spawn("daily_retention", DAY), ws.spawn("hourly_retention", HOUR)]
    codes = [c.wait() for c in children]
    elapsed = time.monotonic() - started
    stop.touch()
    reader.wait(30)
    reads = json.loads(out.read_text())
    text = "\n".join(c.log.read_text(errors="replace") for c in children)
    lock_failures = len(LOCK_ERRORS.findall(text)) + reads["lock_errors"]
    raw = ws.raw_check(
        [("DAY", DAY_END - timedelta(days=ACTIVATION_HISTORY_DAYS + 1), DAY_END),
         ("HOUR", datetime(2026, 11, 17, tzinfo=HOUR_END.tzinfo), HOUR_END)],
    )  # fmt: skip
    daily, hourly, followed = _converge(ws)
    ok = all(code == 0 for code in codes) and lock_failures == 0 and reads["errors"] == 0
    row.injections = 2
    row.case(ok and raw.equal and daily.converged and hourly.converged,
             lost=raw.lost + daily.diverged + hourly.diverged,
             duplicates=raw.duplicates + daily.duplicates + hourly.duplicates)  # fmt: skip
    row.metrics.update(
        {"lock_failures": lock_failures, "reader_reads": reads["reads"], "reader_errors": reads["errors"]}
    )
    row.note(f"exit codes {codes} in {elapsed:.0f} s; lock failures {lock_failures}; analyst: {reads['reads']} reads, "
             f"{reads['errors']} errors")  # fmt: skip
    row.note("serialized only by the resource's lock retry (connections held for short blocks)")
    row.note(followed)
    if not (daily.converged and hourly.converged):
        row.note("destinations: " + "; ".join(daily.details + hourly.details)[:150])
    if not raw.equal:
        row.note("raw: " + "; ".join(raw.details)[:150])
    ws.close()
    return row


def scenarios(suite: Suite, quick: bool) -> list[Row]:
    rows = []
    for scenario_fn in (scenario, without_instance):
        rows.append(scenario_fn(suite))
        suite.progress(rows[-1])
    return rows
