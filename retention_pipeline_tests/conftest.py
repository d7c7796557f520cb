"""Shared fixtures: a small pinned sandbox tenant, its loopback server, and an isolated environment per test."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from retention_pipeline.config import SETTINGS
from retention_pipeline.sandbox.metronome.server import MetronomeSandbox
from retention_pipeline.sandbox.metronome.tenant import TenantSpec, build_tenant

NOW = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
SMALL = TenantSpec(seed=7, customers=40, history_days=40, now=NOW)

# Every variable the pipeline reads (config.SETTINGS); each test starts with none of them set.
PIPELINE_ENV = [*SETTINGS, "DAGSTER_HOME"]


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    for name in PIPELINE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RETENTION_DUCKDB_PATH", str(tmp_path / "retention.duckdb"))
    monkeypatch.setenv("RETENTION_EXPORT_DIR", str(tmp_path / "exports"))
    monkeypatch.setenv("RETENTION_WEBHOOK_INBOX", str(tmp_path / "inbox.sqlite3"))
    return tmp_path


@pytest.fixture
def tenant():
    return build_tenant(SMALL)


@pytest.fixture
def sandbox(tenant):
    return MetronomeSandbox(tenant, usage_page_size=700)


@pytest.fixture
def loopback(sandbox, monkeypatch):
    """The sandbox on a real loopback port, with the pipeline pointed at it as if it were the real API."""
    server = sandbox.serve()
    monkeypatch.setenv("METRONOME_BEARER_TOKEN", "test-token")
    monkeypatch.setenv("METRONOME_API_URL", server.url)
    yield server
    server.close()


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


REPO = Path(__file__).resolve().parents[1]
# `make run` on a small pinned tenant: the environment of the shared sandbox run below.
SANDBOX_RUN_ENV = {
    "RETENTION_SANDBOX_NOW": "2026-11-20T10:30:00Z",  # the docs' example partitions (2026-11-19, …-20-09:00) precede it
    "RETENTION_SANDBOX_CUSTOMERS": "40",
    "RETENTION_HISTORY_DAYS": "45",
    "RETENTION_HOURLY_HISTORY_DAYS": "2",
}


@dataclass(frozen=True)
class SandboxRun:
    """The files of one `retention run` and what it printed. Read them in place; `copy_to` before writing."""

    root: Path
    stdout: str
    stderr: str

    @property
    def database(self) -> Path:
        return self.root / "retention.duckdb"

    @property
    def published(self) -> Path:
        return self.root / "retention_published.duckdb"

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    def env(self, root: Path | None = None) -> dict[str, str]:
        """The variables that point the pipeline at this run's files (or a copy's under `root`)."""
        root = root or self.root
        return {
            **SANDBOX_RUN_ENV,
            "DAGSTER_HOME": str(root / "dagster_home"),
            "RETENTION_DUCKDB_PATH": str(root / "retention.duckdb"),
            "RETENTION_EXPORT_DIR": str(root / "exports"),
            "RETENTION_WEBHOOK_INBOX": str(root / "inbox.sqlite3"),
        }

    def copy_to(self, root: Path) -> dict[str, str]:
        shutil.copytree(self.root, root, ignore=shutil.ignore_patterns(".lock", "done"), dirs_exist_ok=True)
        return self.env(root)


def _sandbox_run_root(tmp_path_factory) -> Path:
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = tmp_path_factory.getbasetemp()
    root = (base.parent / f"sandbox-run-{run_id}") if run_id else base / "sandbox-run"
    root.mkdir(exist_ok=True)
    return root


def build_sandbox_run(root: Path) -> SandboxRun:
    """Build the run under `root` unless done (a file lock makes one process build and the others wait)."""
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").exists():
            (root / "dagster_home").mkdir(exist_ok=True)
            shutil.copy(REPO / "dagster_instance.yaml", root / "dagster_home" / "dagster.yaml")
            env = {k: v for k, v in os.environ.items() if k not in PIPELINE_ENV} | SandboxRun(
                root, "", ""
            ).env()
            done = subprocess.run(
                [sys.executable, "-W", "always", "-m", "retention_pipeline", "run"],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            (root / "stdout.txt").write_text(done.stdout)
            (root / "stderr.txt").write_text(done.stderr)
            if done.returncode == 0:
                (root / "done").touch()
    if not (root / "done").exists():
        raise AssertionError(
            "the shared sandbox run failed:\n" + (root / "stdout.txt").read_text()[-3000:]
            + (root / "stderr.txt").read_text()[-3000:]
        )  # fmt: skip
    return SandboxRun(root, (root / "stdout.txt").read_text(), (root / "stderr.txt").read_text())


TESTS = Path(__file__).resolve().parent
# The files that take 40 s or more (their test time with -n 2 on 2 busy cores, 2026-12-02), longest first.
SLOW_FILES = (
    "bench/test_bench_smoke.py",  # ~90 s: the benchmark's smoke run
    "destinations/test_send_time_safety.py",  # ~85 s: `retention run` twice and five daily/hourly jobs
    "reliability/test_reliability_quick.py",  # ~85 s: the reliability suite's quick subset
    "destinations/test_activation_e2e.py",  # ~50 s
    "test_dg_cli.py",  # ~45 s: dg subprocesses
)


def pytest_collection_modifyitems(items):
    """File order, the same on every xdist worker: `--dist loadfile` (Makefile) with `--no-loadscope-reorder` (addopts)
    hands files to the workers in this order, longest first, so no long file starts last and holds the run up
    (xdist's default order, most tests first, started the two files that wait for the shared sandbox run first, both
    workers idle while it was built, and the longest files last). The slow files that do not read the shared sandbox
    run come first, so it is built in the background meanwhile (pytest_collection_finish); then the files that read
    it; then every other file."""
    readers = {item.path for item in items if "sandbox_run" in getattr(item, "fixturenames", ())}

    def rank(item) -> tuple[int, int]:
        relative = item.path.relative_to(TESTS).as_posix() if item.path.is_relative_to(TESTS) else ""
        slow = SLOW_FILES.index(relative) if relative in SLOW_FILES else len(SLOW_FILES)
        if item.path in readers:
            return (1, slow)
        return (0 if slow < len(SLOW_FILES) else 2, slow)

    items.sort(key=rank)  # stable: each file's tests keep their order, the other files their collection order


def pytest_collection_finish(session):
    """Start the shared sandbox run in the background as soon as one worker (gw0, or the only process) knows a
    test needs it, so the tests that read it do not sit idle while it is built."""
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        return
    if not any("sandbox_run" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    factory = getattr(
        session.config, "_tmp_path_factory", None
    )  # pytest's tmp_path_factory, before any fixture
    if factory is None:
        return
    root = _sandbox_run_root(factory)
    threading.Thread(target=_build_quietly, args=(root,), daemon=True, name="sandbox-run").start()


def _build_quietly(root: Path) -> None:
    with contextlib.suppress(
        AssertionError
    ):  # the fixture raises it, with the output, for the tests that need it
        build_sandbox_run(root)


@pytest.fixture(scope="session")
def sandbox_run(tmp_path_factory) -> SandboxRun:
    """One fresh `retention run` (make run's code path, in a subprocess with every warning shown) per test session,
    built once (in the background from collection on, see pytest_collection_finish) and shared by every worker: the
    files of a run take a minute to make, and several test files only read them."""
    return build_sandbox_run(_sandbox_run_root(tmp_path_factory))
