"""Timing and peak memory of one call, and side-by-side repetitions of a subject and its reference.

Peak RSS is the kernel's high-water mark (VmHWM), reset before each measured call by writing 5 to
/proc/self/clear_refs, so a call's peak is its own even when several calls share a process. Where the reset is not
allowed, the peak falls back to the process's high-water mark so far (reported as such).
"""

from __future__ import annotations

import gc
import re
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_HWM = re.compile(r"VmHWM:\s+(\d+) kB")
_RSS = re.compile(r"VmRSS:\s+(\d+) kB")


def _status_kb(pattern: re.Pattern[str]) -> int | None:
    try:
        match = pattern.search(Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) if match else None


def reset_peak() -> bool:
    """Reset the process's RSS high-water mark; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    kb = _status_kb(_HWM)
    if kb is None:  # not Linux: ru_maxrss is the lifetime peak (KiB on Linux, bytes on macOS)
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024, 1)


def rss_mib() -> float:
    kb = _status_kb(_RSS)
    return round((kb or 0) / 1024, 1)


@dataclass
class Sample:
    seconds: float
    peak_rss_mib: float
    peak_is_per_call: bool
    cpu_seconds: float = 0.0


def cpu_seconds() -> float:
    """CPU time of this process (all its threads, e.g. DuckDB's) and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(fn: Callable[[], object], reset: bool = True) -> tuple[Sample, object]:
    """Run `fn` once; its wall time, CPU time and the peak RSS reached while it ran (with `reset=False`: since the
    process started, which is what a fresh process running only `fn` would need).

    CPU time is the cross-check on a shared machine: other work inflates wall time, not the CPU time spent."""
    gc.collect()
    per_call = reset_peak() if reset else False
    cpu = cpu_seconds()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    return Sample(seconds, peak_rss_mib(), per_call, cpu_seconds() - cpu), result


@dataclass
class Series:
    """Repeated samples of one subject; the median is what the report uses."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    result: object = None

    @property
    def seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def cpu_seconds(self) -> float:
        return statistics.median(s.cpu_seconds for s in self.samples)

    def summary(self) -> dict:
        return {
            "seconds": round(self.seconds, 4),
            "seconds_all": [round(s.seconds, 4) for s in self.samples],
            "cpu_seconds": round(self.cpu_seconds, 4),
        }


def side_by_side(
    subjects: dict[str, Callable[[], object]],
    reps: int,
    before_each: Callable[[str], None] | None = None,
    warmup: bool | None = None,
) -> dict[str, Series]:
    """Run every subject `reps` times, interleaved and in a rotating order, so drift on a noisy machine hits all
    of them alike. `before_each(name)` runs untimed before each call (e.g. to restore a database file). With
    `warmup` (default: when reps > 1) each subject first runs once untimed, so lazy imports and cold caches are
    nobody's cost."""
    series = {name: Series(name) for name in subjects}
    names = list(subjects)
    if warmup if warmup is not None else reps > 1:
        for name in names:
            if before_each is not None:
                before_each(name)
            subjects[name]()
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            if before_each is not None:
                before_each(name)
            sample, result = measure(subjects[name])
            series[name].samples.append(sample)
            series[name].result = result
    return series


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def profile_top(fn: Callable[[], object], n: int = 12, only: tuple[str, ...] = ()) -> list[dict]:
    """cProfile of one call: the `n` functions with the most cumulative time whose location mentions one of
    `only` (all when empty), to show where a missed goal's time goes."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    rows = []
    for (path, line, name), (_, calls, own, cumulative, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        where = f"{path}:{line}({name})" if path != "~" else name
        if only and not any(token in where for token in only):
            continue
        short = where.split("site-packages/")[-1].split(str(_ROOT) + "/")[-1]
        rows.append(
            {"function": short, "calls": calls, "cumulative_s": round(cumulative, 4), "own_s": round(own, 4)}
        )
    return sorted(rows, key=lambda r: -r["cumulative_s"])[:n]
