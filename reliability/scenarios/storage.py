"""Storage faults: the disk fills up while the analysts' copy is published.

A full disk is simulated without root by RLIMIT_FSIZE in a child process: any write that would grow a file past the
limit fails (EFBIG, "File too large") exactly where ENOSPC would. Two places fail: the copy into
RETENTION_PUBLISHED_PATH (limit at half the DuckDB file, tried by two processes in a row) and the CHECKPOINT of the
working file (rows left in its WAL, limit at its size), after which the same process publishes again.

What must hold: the run fails with the OS error and the setting to fix, never "cannot rollback"; no temp file or
folder is left beside the copy; the previous copy stays as it was; the next run, in the same process or a new one,
publishes a copy holding every raw row of the working file.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from reliability.report import Row
from reliability.workspace import DAY, RAW_DAILY, REPO, Child, Suite, Workspace, child_env

GROUP = "Storage faults"
PUBLISH = [["operations", "published_copy"]]
RESULT = "RESULT "

# Runs in the child: publish under the file-size limit, lift the limit, publish again in the same process (the
# failed run's result, and anything its traceback holds, still referenced), print both outcomes as one JSON line.
CHILD = """
import json, os, resource, signal, sys
import dagster as dg
import duckdb
from retention_pipeline.definitions import defs

db, fault, partition = sys.argv[1:4]
if fault == "checkpoint":  # 8 MB of rows only in the WAL (chunks below a row group), so the CHECKPOINT must write
    with duckdb.connect(db) as con:
        con.execute("PRAGMA disable_checkpoint_on_shutdown")
        con.execute("CREATE OR REPLACE TABLE main.padding (h UBIGINT)")
        for chunk in range(10):
            con.execute(f"INSERT INTO main.padding SELECT hash(range + {chunk * 100_000}) FROM range(100000)")
limit = os.path.getsize(db) // (2 if fault == "copy" else 1)

def publish():
    result = defs.resolve_job_def("daily_retention").execute_in_process(
        partition_key=partition, asset_selection=[dg.AssetKey(["operations", "published_copy"])],
        raise_on_error=False)
    errors = []
    for event in result.all_events:
        error = event.step_failure_data.error if event.is_step_failure else None
        while error is not None:
            errors.append(error.message.strip())
            error = error.cause
    return result, {"success": result.success, "errors": errors}

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
failed, first = publish()
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
_, second = publish() if fault == "checkpoint" else (None, None)
print("RESULT " + json.dumps({"first": first, "second": second}), flush=True)
"""


def _limited_publish(ws: Workspace, fault: str) -> dict:
    """`fault` "copy": the limit at half the working file; "checkpoint": rows in the WAL, the limit at its size."""
    ws.runs += 1
    log = ws.path / f"child-{ws.runs}.log"
    handle = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ws.db), fault, DAY],
        env=child_env(ws.env),
        cwd=REPO,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    child = Child(
        process, log, handle, ws.suite.transcript, f"{ws.name} child {ws.runs} (publish, {fault} fault)"
    )
    child.wait()
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(RESULT)]
    if not lines:
        return {"first": {"success": False, "errors": [f"child exited {child.code} without a result"]}}
    return json.loads(lines[-1][len(RESULT) :])


def _leftovers(ws: Workspace) -> list[str]:
    return sorted(p.name for p in ws.path.iterdir() if p.name.startswith("."))


def _digest(ws: Workspace) -> str:
    published = ws.path / "published.duckdb"
    return hashlib.sha256(published.read_bytes()).hexdigest() if published.exists() else ""


def _judge(row: Row, label: str, outcome: dict, setting: str, ws: Workspace, before: str | None) -> None:
    """`before`: the digest the copy must still have (None when the same-process retry replaced it)."""
    first = outcome["first"]
    text = "\n".join(first["errors"])
    injected = not first["success"] and "File too large" in text
    row.injections += injected
    problems = []
    if not injected:
        problems.append(f"the limit did not fail the publish ({text[:160] or 'it succeeded'})")
    if setting not in text or "cannot rollback" in text:
        problems.append(f"message: {text[:200]}")
    if leftovers := _leftovers(ws):
        problems.append(f"left behind: {', '.join(leftovers)}")
    if before is not None and _digest(ws) != before:
        problems.append("the previous copy changed")
    second = outcome.get("second")
    if second is not None and not second["success"]:
        problems.append(f"the next run in the same process failed: {' | '.join(second['errors'])[:200]}")
    row.case(not problems, message=f"{label}: {'; '.join(problems)}" if problems else None, finding="F17")


def _raw_rows_missing(ws: Workspace) -> int:
    """Rows of the working file's raw tables that the published copy does not hold."""
    published = str(ws.path / "published.duckdb").replace("'", "''")
    with ws.read() as con:
        con.execute(f"ATTACH '{published}' AS published (READ_ONLY)")
        tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'raw' "
                                            "AND database_name = current_database()").fetchall()]  # fmt: skip
        return sum(
            max(0, con.execute(f"SELECT (SELECT count(*) FROM raw.{t}) - "
                               f"(SELECT count(*) FROM published.raw.{t})").fetchone()[0])
            for t in tables
        )  # fmt: skip


def disk_full_on_publish(suite: Suite, quick: bool) -> Row:
    row = Row(GROUP, "disk full on publish (the copy; the CHECKPOINT), then the next run")
    ws = suite.workspace("disk-full-publish")
    prepared = ws.run("daily_retention", DAY, RAW_DAILY + PUBLISH)
    if not prepared.success:
        raise RuntimeError(f"preparing the working file failed: {prepared.message}")
    before = _digest(ws)
    for attempt in (1,) if quick else (1, 2):  # each process used to leave its own temp file
        outcome = _limited_publish(ws, "copy")
        _judge(row, f"copy attempt {attempt}", outcome, "RETENTION_PUBLISHED_PATH", ws, before)
    outcome = _limited_publish(ws, "checkpoint")
    _judge(row, "CHECKPOINT", outcome, "RETENTION_DUCKDB_PATH", ws, None)
    second = (outcome.get("second") or {}).get("success", False)
    final = ws.run("daily_retention", DAY, PUBLISH)
    lost = _raw_rows_missing(ws)
    row.case(final.success and lost == 0, lost=lost, finding="F17",
             message=None if final.success else f"next run: {final.message[:200]}")  # fmt: skip
    row.note("EFBIG from RLIMIT_FSIZE stands in for ENOSPC; failures name the setting and the OS error")
    row.note(f"same-process publish after the failed CHECKPOINT {'succeeded' if second else 'FAILED'}")
    row.metrics.update({"leftovers": len(_leftovers(ws)), "same_process_retry_ok": int(second)})
    ws.close()
    return row


def scenarios(suite: Suite, quick: bool) -> list[Row]:
    """Not in --quick: the same faults are tests in make test (test_publish.py, test_warehouse.py)."""
    if quick:
        return []
    row = disk_full_on_publish(suite, quick)
    suite.progress(row)
    return [row]
