"""`python -m reliability.run [--quick] [--kills N] [--seed S] [--no-write] [--only GROUP]`: every fault scenario, one table.

Prints fault | injections | recovered | rows lost | duplicates | notes. The full run writes
reliability/results/<date>.json and rewrites the generated table in docs/reliability.md; `--quick` (a representative
subset with few kills, what the test suite runs) writes reliability/results/<date>-quick.json only.
Exit status: 0 when every row holds or fails only on an open finding (reliability/findings.py), else 1.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from reliability.capture import Console, captured_fds
from reliability.findings import FINDINGS, OPEN
from reliability.report import Row, machine, now_iso, rewrite_doc, table, totals, write_json
from reliability.workspace import REPO, Suite, environ

RESULTS = REPO / "reliability" / "results"
DOC = REPO / "docs" / "reliability.md"
# full: 20 during extraction + 20 during sync, plus 10 each aimed at TikTok's and Pinterest's uploads (kills // 4);
# quick: one during extraction and one during Pinterest's uploads (process_death.scenarios)
FULL_KILLS, QUICK_KILLS = 40, 2


def _groups(kills: int, seed: int) -> list[tuple[str, Callable[[Suite, bool], list[Row]]]]:
    from reliability.scenarios import (
        bad_input,
        concurrency,
        destinations,
        metronome,
        process_death,
        safety,
        security,
        storage,
        webhooks,
    )

    return [
        ("Metronome faults", metronome.scenarios),
        ("Destination faults", destinations.scenarios),
        ("Process death", lambda suite, quick: process_death.scenarios(suite, quick, kills, seed)),
        ("Concurrency", concurrency.scenarios),
        ("Bad input", bad_input.scenarios),
        ("Webhooks", webhooks.scenarios),
        ("Storage faults", storage.scenarios),
        ("Send-time safety", safety.scenarios),
        ("Security scans", security.scenarios),
    ]


def run(
    quick: bool = False,
    kills: int | None = None,
    seed: int = 20261120,
    console: Console | None = None,
    only: str | None = None,
) -> dict:
    """Run the suite (`only`: the groups whose title contains it); returns {"rows": [...], "meta": {...}}."""
    kills = kills if kills is not None else (QUICK_KILLS if quick else FULL_KILLS)
    console = console or Console()
    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp, environ({}):
        suite = Suite(Path(tmp), console)
        try:
            for title, scenarios in _groups(kills, seed):
                if (quick and title == "Concurrency") or (only and only.lower() not in title.lower()):
                    continue
                console.print(f"{title} …")
                group_started = suite._last_progress = time.monotonic()
                try:
                    suite.proxy.clear()
                    with captured_fds(suite.transcript, f"group {title}"):
                        produced = scenarios(suite, quick)
                except Exception as error:  # noqa: BLE001 - a crashed scenario is reported as a failing row
                    produced = [Row(title, f"scenario crashed: {type(error).__name__}: {error}"[:200])]
                    produced[0].case(False, message=traceback.format_exc()[-1500:])
                    suite.progress(produced[0])
                console.print(f"  ({time.monotonic() - group_started:.0f} s)")
                rows += produced
        finally:
            suite.close()
    meta = {
        "date": now_iso(),
        "machine": machine(),
        "seconds": round(time.monotonic() - started, 1),
        "command": "python -m reliability.run"
        + (" --quick" if quick else "")
        + f" --kills {kills} --seed {seed}",
        "quick": quick,
        "kills": kills,
        "seed": seed,
        "findings": {key: asdict(finding) for key, finding in FINDINGS.items()},
    }
    return {"rows": rows, "meta": meta}


def must_hold(rows: list[Row]) -> list[str]:
    """Failures no open finding explains: a new bug, a regression of a fixed one, or a fault of the suite."""
    problems = []
    for row in rows:
        unexcused = [f for f in row.findings if f not in OPEN]
        if row.unexplained or unexcused:
            problems.append(f"{row.group} / {row.fault}: {row.recovered}/{row.cases} recovered, "
                            f"{row.rows_lost} lost, {row.duplicates} duplicates; {'; '.join(row.messages)[:300]}")  # fmt: skip
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="representative subset, few kills (about 1.5 min)"
    )
    parser.add_argument(
        "--kills", type=int, default=None, help=f"kill -9 count (default {FULL_KILLS}, quick {QUICK_KILLS})"
    )
    parser.add_argument("--seed", type=int, default=20261120, help="seed of the random kill points")
    parser.add_argument("--no-write", action="store_true", help="print only; write no results file or doc")
    parser.add_argument(
        "--only",
        metavar="GROUP",
        help="only the groups whose title contains GROUP, e.g. 'destination' (no writes)",
    )
    args = parser.parse_args(argv)
    args.no_write = args.no_write or bool(args.only)
    console = Console()
    result = run(args.quick, args.kills, args.seed, console, only=args.only)
    rows, meta = result["rows"], result["meta"]
    meta["command"] = (
        "python -m reliability.run" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    )
    console.print()
    console.print(table(rows))
    t = totals(rows)
    console.print()
    console.print(
        f"{t['faults']} faults, {t['injections']} injections, {t['recovered']}/{t['cases']} recovered, "
        f"{t['rows_lost']} rows lost, {t['duplicates']} duplicates; {t['failing_rows']} failing row(s); "
        f"{meta['seconds']:.0f} s on {meta['machine']}"
    )
    for key in sorted({f for r in rows if not r.ok for f in r.findings}):
        finding = FINDINGS.get(key)
        status = (
            "open"
            if key in OPEN
            else f"REGRESSION (fixed in {finding.fixed_in})"
            if finding
            else "undocumented"
        )
        console.print(f"  {key} [{status}]: {finding.summary if finding else ''}")
    for row in rows:
        if not row.ok:
            console.print(f"  FAIL {row.fault}: " + " | ".join(row.messages)[:600])
    if not args.no_write:
        day = meta["date"][:10]
        path = RESULTS / (f"{day}-quick.json" if args.quick else f"{day}.json")
        write_json(rows, path, meta)
        console.print(f"wrote {path.relative_to(REPO)}")
        if not args.quick:
            rewrite_doc(DOC, rows, meta)
            console.print(f"rewrote the table in {DOC.relative_to(REPO)}")
    problems = must_hold(rows)
    for problem in problems:
        console.print(f"MUST HOLD: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    warnings.simplefilter(
        "ignore"
    )  # Dagster's beta/preview notices at definitions load; the table is the output
    sys.exit(main())
