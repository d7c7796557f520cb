"""Everything the scenarios print or log, kept for the security scan, plus a console that bypasses the capture.

In-process runs are captured at the file-descriptor level (Dagster's console logger, the SDK, warnings, threads of
the loopback servers: anything written to fd 1 or 2), child processes through their pipes, and each run's Dagster
event log is serialized whole (messages, metadata, errors with their causes).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Transcript:
    """Captured text by source; `scan` counts occurrences of needles (secrets, raw PII) across all of it."""

    parts: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, source: str, text: str) -> None:
        if text:
            with self._lock:
                self.parts.append((source, text))

    def chars(self) -> int:
        return sum(len(t) for _, t in self.parts)

    def scan(self, needles: dict[str, str]) -> dict[str, list[str]]:
        """needle label → sources it appeared in (case-insensitive)."""
        hits: dict[str, list[str]] = {}
        lowered = [(source, text.lower()) for source, text in self.parts]
        for label, needle in needles.items():
            wanted = needle.lower()
            found = [source for source, text in lowered if wanted in text]
            if found:
                hits[label] = found
        return hits


class Console:
    """Progress lines on the terminal the suite started with, even while fds 1/2 are captured."""

    def __init__(self) -> None:
        self._stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)

    def print(self, text: str = "") -> None:
        self._stream.write(text + "\n")
        self._stream.flush()


@contextlib.contextmanager
def captured_fds(transcript: Transcript, source: str) -> Iterator[None]:
    """Redirect fds 1 and 2 into a temp file for the block, then add what was written to the transcript."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            transcript.add(source, sink.read().decode("utf-8", errors="replace"))
