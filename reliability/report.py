"""One row per fault: what was injected, whether the pipeline recovered, rows lost, duplicates; the table and files."""

from __future__ import annotations

import json
import platform
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

DOC_START = "<!-- reliability-table:start -->"
DOC_END = "<!-- reliability-table:end -->"


@dataclass
class Row:
    """A fault and its figures.

    `cases` is how many independent runs (or deliveries, files, values) the fault was tried in; `recovered` how
    many of those ended in a state the design accepts: the data equals the truth after the fault (and, where the
    design says so, one normal re-run), or the run failed with a message naming the cause. A failure explained by a
    bug in docs/reliability.md carries its id in `findings`; such rows stay in the table, honestly failing, and
    `unexplained` counts failures no finding explains (those break `make reliability`).
    """

    group: str
    fault: str
    injections: int = 0
    cases: int = 0
    recovered: int = 0
    rows_lost: int = 0
    duplicates: int = 0
    notes: str = ""
    findings: list[str] = field(default_factory=list)
    unexplained: int = 0
    flags: int = 0  # must-hold figures broken although the data recovered (e.g. a silent partial success)
    messages: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.recovered == self.cases and self.rows_lost == 0 and self.duplicates == 0 and not self.flags
        )

    def case(
        self,
        recovered: bool,
        *,
        lost: int = 0,
        duplicates: int = 0,
        message: str | None = None,
        finding: str | None = None,
    ) -> None:
        self.cases += 1
        self.recovered += bool(recovered)
        self.rows_lost += lost
        self.duplicates += duplicates
        if message and message not in self.messages:
            self.messages.append(message)
        if not recovered or lost or duplicates:
            self._explain(finding)

    def flag(self, finding: str | None, message: str) -> None:
        """A must-hold figure broke in a case that otherwise recovered."""
        self.flags += 1
        if message not in self.messages:
            self.messages.append(message)
        self._explain(finding)

    def _explain(self, finding: str | None) -> None:
        if finding is None:
            self.unexplained += 1
        elif finding not in self.findings:
            self.findings.append(finding)

    def note(self, text: str) -> None:
        self.notes = f"{self.notes}; {text}" if self.notes else text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[Row]) -> str:
    lines = [
        "| fault | injections | recovered | rows lost | duplicates | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    group = None
    for row in rows:
        if row.group != group:
            group = row.group
            lines.append(f"| **{_cell(group)}** | | | | | |")
        flag = "" if row.ok else f" **FAIL{' (' + ', '.join(row.findings) + ')' if row.findings else ''}**"
        lines.append(
            f"| {_cell(row.fault)} | {row.injections} | {row.recovered}/{row.cases}{flag} | {row.rows_lost} "
            f"| {row.duplicates} | {_cell(row.notes)} |"
        )
    return "\n".join(lines)


def totals(rows: list[Row]) -> dict[str, int]:
    return {
        "faults": len(rows),
        "injections": sum(r.injections for r in rows),
        "cases": sum(r.cases for r in rows),
        "recovered": sum(r.recovered for r in rows),
        "rows_lost": sum(r.rows_lost for r in rows),
        "duplicates": sum(r.duplicates for r in rows),
        "failing_rows": sum(not r.ok for r in rows),
        "unexplained_failures": sum(r.unexplained for r in rows),
    }


def machine() -> str:
    import os

    return f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def write_json(rows: list[Row], path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "totals": totals(rows), "rows": [asdict(r) | {"ok": r.ok} for r in rows]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def rewrite_doc(doc: Path, rows: list[Row], meta: dict) -> None:
    """Replace the generated section of docs/reliability.md (between the markers) with the latest table."""
    t = totals(rows)
    section = "\n".join(
        [
            DOC_START,
            f"Latest run: {meta['date']} on {meta['machine']}, {meta['seconds']:.0f} s, `{meta['command']}`"
            + (" (quick subset)" if meta.get("quick") else "")
            + ".",
            "",
            f"{t['faults']} faults, {t['injections']} injections, {t['recovered']}/{t['cases']} recovered, "
            f"{t['rows_lost']} rows lost, {t['duplicates']} duplicates, {t['failing_rows']} failing rows.",
            "",
            table(rows),
            DOC_END,
        ]
    )
    text = doc.read_text() if doc.exists() else f"# Reliability\n\n{DOC_START}\n{DOC_END}\n"
    if DOC_START not in text:
        text = text.rstrip() + f"\n\n{DOC_START}\n{DOC_END}\n"
    pattern = re.compile(re.escape(DOC_START) + ".*?" + re.escape(DOC_END), re.DOTALL)
    doc.write_text(pattern.sub(lambda _: section, text, count=1))


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()
