"""The world each scenario runs in: a pinned sandbox tenant behind a fault proxy, destination sandboxes behind
their own proxies, a fresh DuckDB file per scenario, and the checks every scenario shares (raw tables against the
tenant's truth, destination state against `segments.audiences`, duplicate effects).

The pipeline is driven exactly as users drive it: `defs.resolve_job_def(job).execute_in_process(...)` in this
process (captured at the fd level) or in a child process (for `kill -9`), configured only through env vars.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
from dagster._core.events import DagsterEventType
from dagster._serdes import serialize_value

from reliability.capture import Console, Transcript, captured_fds
from reliability.proxy import FaultProxy
from retention_pipeline.config import SETTINGS
from retention_pipeline.sandbox.customerio import CustomerIoSandbox
from retention_pipeline.sandbox.google import GoogleDataManagerSandbox
from retention_pipeline.sandbox.meta import MetaSandbox
from retention_pipeline.sandbox.metronome.server import MetronomeSandbox
from retention_pipeline.sandbox.metronome.tenant import SandboxTenant, TenantSpec, build_tenant
from retention_pipeline.sandbox.pinterest import PinterestSandbox
from retention_pipeline.sandbox.tiktok import TikTokSandbox
from retention_pipeline.source.extract import ceil_day

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
DAY = "2026-11-19"  # complete at NOW
DAY_END = datetime(2026, 11, 20, tzinfo=UTC)
HOUR = "2026-11-20-09:00"
HOUR_END = datetime(2026, 11, 20, 10, tzinfo=UTC)
SPEC = TenantSpec(seed=7, customers=60, history_days=40, now=NOW)
EXTRACTION_HISTORY_DAYS = 10  # extraction-only scenarios: a short backfill keeps runs fast
ACTIVATION_HISTORY_DAYS = 30  # features need 14 days; segments need a month to have members
DESTINATION_TIMEOUT_S = 3  # RETENTION_DESTINATION_TIMEOUT_S: keeps the destination timeout cases short
# TIKTOK_BATCH_ROWS / PINTEREST_BATCH_RECORDS: small, so a 60-customer tenant's uploads span several requests and a
# fault can land mid-batch (as PAGE_LIMITS makes Metronome page).
AD_BATCH = 5
TIKTOK_ADVERTISER = "7000000000000000001"
PINTEREST_AD_ACCOUNT = "549756359984"
DESTINATION_NAMES = ("customerio", "meta", "google", "tiktok", "pinterest")
# Destinations whose objects the pipeline creates in the suite (none are listed in its destinations.yaml).
CREATED = ("tiktok", "pinterest")

# Distinctive values, so a scan for them cannot match anything else.
SECRETS = {
    "METRONOME_BEARER_TOKEN": "rlb-metronome-token-7Qx2Vb9LkT",
    "CUSTOMERIO_SITE_ID": "rlb-cio-site-4Hs8",
    "CUSTOMERIO_API_KEY": "rlb-cio-track-key-Zp3Mw6Yt1R",
    "CUSTOMERIO_APP_API_KEY": "rlb-cio-app-key-Gd5Nq8Vc2J",
    "META_ACCESS_TOKEN": "rlb-meta-token-Ef7Ku1Xs4P",
    "GOOGLE_ACCESS_TOKEN": "rlb-google-token-Wm9Tr2Lb6H",
    "TIKTOK_ACCESS_TOKEN": "rlb-tiktok-token-Hq6Vd3Rn8M",
    "PINTEREST_ACCESS_TOKEN": "rlb-pinterest-token-Xb4Jc7Ws1F",
    "METRONOME_WEBHOOK_SECRET": "rlb-webhook-secret-Ya3Pf8Dn5C",
}

# Matchers for the six Metronome endpoints extraction calls (the resource's probe lists customers with limit=1).
METRONOME_ENDPOINTS = {
    "GET /v1/customers": ("GET", r"^/v1/customers$", lambda e: e.query.get("limit") != "1"),
    "GET /v1/billable-metrics": ("GET", r"^/v1/billable-metrics$", None),
    "POST /v1/usage": ("POST", r"^/v1/usage$", None),
    "GET /v1/customers/{id}/invoices": ("GET", r"^/v1/customers/[^/]+/invoices$", None),
    "POST /v2/contracts/list": ("POST", r"^/v2/contracts/list$", None),
    "POST /v1/contracts/customerBalances/list": ("POST", r"^/v1/contracts/customerBalances/list$", None),
}
PAGE_LIMITS = {
    r"^/v1/customers$": 25,
    r"^/v1/billable-metrics$": 2,
    r"/invoices$": 3,
    r"^/v2/contracts/list$": 1,
    r"^/v1/contracts/customerBalances/list$": 2,
}

RAW_DAILY = [
    ["raw", "metronome_customers"], ["raw", "metronome_billable_metrics"], ["raw", "metronome_contracts"],
    ["raw", "metronome_invoices"], ["raw", "metronome_balances"], ["raw", "metronome_usage_daily"],
    ["raw", "contacts"],
]  # fmt: skip
SYNC_DAILY = [["sync", "activation_daily"]]
SYNC_HOURLY = [["sync", "activation_hourly"]]


def _defs():
    from retention_pipeline.definitions import defs

    return defs


def upstream_of(job: str, asset: list[str]) -> list[list[str]]:
    """Every asset of the job the given one depends on (not itself): a run that prepares a sync."""
    defs = _defs()
    key = dg.AssetKey(asset)
    job_def = defs.resolve_job_def(job)
    upstream = dg.AssetSelection.assets(key).upstream().resolve(defs.get_repository_def().asset_graph) - {key}
    return [list(k.path) for k in sorted(upstream & job_def.asset_layer.executable_asset_keys)]


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Exactly these pipeline settings for the block (every other documented setting unset)."""
    names = set(SETTINGS) | {"DAGSTER_HOME"} | set(values)
    saved = {n: os.environ.get(n) for n in names}
    for name in names:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def child_env(values: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS and k != "DAGSTER_HOME"}
    env.update(values)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# ------------------------------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """How one run ended: success, or the causes Dagster recorded (innermost user error first)."""

    success: bool
    errors: list[str] = field(default_factory=list)
    retries: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    run_id: str = ""
    failed_steps: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        if not self.errors:
            return ""
        return f"[{self.failed_steps[0]}] {self.errors[0]}" if self.failed_steps else self.errors[0]

    def names(self, *needles: str) -> bool:
        """The failure message mentions every needle (case-insensitive)."""
        text = " ".join(self.errors).lower()
        return bool(self.errors) and all(n.lower() in text for n in needles)


WRAPPERS = ("RetryRequestedFromPolicy", "Failure", "RetryRequested")


def _innermost(error) -> str:
    """The outermost error raised by project (or library) code, under Dagster's wrappers and retry markers."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause or error.context
    user = [e for e in chain if not e.cls_name.startswith("Dagster") and e.cls_name not in WRAPPERS] or chain
    first = user[0]
    text = first.message.strip()
    prefix = f"{first.cls_name}: "
    return text if text.startswith(prefix) or f".{prefix}" in text.split("\n")[0] else prefix + text


def outcome_of(result, instance, transcript: Transcript, source: str, seconds: float) -> Outcome:
    errors, steps, retries, warnings, failed_checks = [], [], 0, [], []
    for event in result.all_events:
        if event.event_type == DagsterEventType.STEP_FAILURE:
            errors.append(_innermost(event.step_failure_data.error))
            steps.append(event.step_key)
        elif event.event_type == DagsterEventType.RUN_FAILURE:
            error = getattr(event.event_specific_data, "error", None)
            if error is not None:
                errors.append(_innermost(error))
        elif event.event_type == DagsterEventType.STEP_UP_FOR_RETRY:
            retries += 1
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                failed_checks.append(f"{evaluation.check_name} ({evaluation.severity.value})")
    records = instance.all_logs(result.run_id)
    for record in records:
        if record.level >= 30 and record.user_message and record.dagster_event is None:
            warnings.append(record.user_message)
    transcript.add(f"{source} event log", "\n".join(serialize_value(r) for r in records))
    return Outcome(result.success, errors, retries, warnings, seconds, result.run_id, steps, failed_checks)


# ------------------------------------------------------------------------------------------------ destinations


class Destinations:
    """Customer.io, Meta, Google, TikTok and Pinterest sandboxes on loopback, each behind a recording fault proxy.

    Customer.io manual segments, Meta audiences and Google user lists are given in destinations.yaml; TikTok
    audiences and Pinterest customer lists are not, so the pipeline creates them as it does by default (TikTok
    before the first send, Pinterest from the first adds) and records them in `sync.destination_objects`."""

    def __init__(self, root: Path, segments: list, sink: list[bytes] | None = None) -> None:
        self.sink = (
            sink if sink is not None else []
        )  # every body sent to the ad destinations, for the PII scan
        self.cio = CustomerIoSandbox()
        self.meta = MetaSandbox(ad_account_id="1234567890")
        self.google = GoogleDataManagerSandbox()
        self.tiktok = TikTokSandbox(
            access_token=SECRETS["TIKTOK_ACCESS_TOKEN"], advertiser_id=TIKTOK_ADVERTISER, max_rows=AD_BATCH
        )
        self.pinterest = PinterestSandbox(
            access_token=SECRETS["PINTEREST_ACCESS_TOKEN"],
            ad_account_id=PINTEREST_AD_ACCOUNT,
            max_records=AD_BATCH,
        )
        self.servers = [s.serve() for s in (self.cio, self.meta, self.google, self.tiktok, self.pinterest)]
        self.cio_proxy, self.meta_proxy, self.google_proxy, self.tiktok_proxy, self.pinterest_proxy = (
            FaultProxy(s.url) for s in self.servers
        )
        targets = [s for s in segments if s.purpose == "target"]
        self.cio_segments = {
            s.name: self.cio.create_segment(s.name) for s in targets if "customerio" in s.destinations
        }
        self.audiences = {
            s.name: self.meta.create_audience(s.name) for s in targets if "meta" in s.destinations
        }
        self.user_lists = {s.name: f"list-{s.name}" for s in targets if "google" in s.destinations}
        routing = {
            "customerio": {"manual_segments": self.cio_segments},
            "meta": {"audiences": self.audiences, "min_audience_floor": 0},
            "google": {"operating_account": {"accountType": "GOOGLE_ADS", "accountId": "1"},
                       "user_lists": self.user_lists},
            "tiktok": {"audiences": {}, "min_audience_floor": 0},
            "pinterest": {"customer_lists": {}, "min_audience_floor": 0},
        }  # fmt: skip
        self.routing_path = root / "destinations.yaml"
        self.routing_path.write_text(json.dumps(routing))

    @property
    def proxies(self) -> list[FaultProxy]:
        return [self.cio_proxy, self.meta_proxy, self.google_proxy, self.tiktok_proxy, self.pinterest_proxy]

    def proxy(self, destination: str) -> FaultProxy:
        return dict(zip(DESTINATION_NAMES, self.proxies, strict=True))[destination]

    def env(self) -> dict[str, str]:
        return {
            "RETENTION_DESTINATIONS_CONFIG": str(self.routing_path),
            "CUSTOMERIO_SITE_ID": SECRETS["CUSTOMERIO_SITE_ID"],
            "CUSTOMERIO_API_KEY": SECRETS["CUSTOMERIO_API_KEY"],
            "CUSTOMERIO_APP_API_KEY": SECRETS["CUSTOMERIO_APP_API_KEY"],
            "CUSTOMERIO_TRACK_URL": self.cio_proxy.url,
            "CUSTOMERIO_APP_URL": self.cio_proxy.url,
            "META_ACCESS_TOKEN": SECRETS["META_ACCESS_TOKEN"],
            "META_AD_ACCOUNT_ID": "1234567890",
            "META_GRAPH_URL": f"{self.meta_proxy.url}/v25.0",
            "GOOGLE_ACCESS_TOKEN": SECRETS["GOOGLE_ACCESS_TOKEN"],
            "GOOGLE_DATA_MANAGER_URL": self.google_proxy.url,
            "TIKTOK_ACCESS_TOKEN": SECRETS["TIKTOK_ACCESS_TOKEN"],
            "TIKTOK_ADVERTISER_ID": TIKTOK_ADVERTISER,
            "TIKTOK_API_URL": f"{self.tiktok_proxy.url}/open_api/v1.3",
            "TIKTOK_BATCH_ROWS": str(AD_BATCH),
            "PINTEREST_ACCESS_TOKEN": SECRETS["PINTEREST_ACCESS_TOKEN"],
            "PINTEREST_AD_ACCOUNT_ID": PINTEREST_AD_ACCOUNT,
            "PINTEREST_API_URL": f"{self.pinterest_proxy.url}/v5",
            "PINTEREST_BATCH_RECORDS": str(AD_BATCH),
        }

    def sends(self, destination: str | None = None) -> int:
        """Requests that could change a destination (the credential probes and read-backs are GETs)."""
        proxies = self.proxies if destination is None else [self.proxy(destination)]
        return sum(p.count(lambda e: e.method != "GET") for p in proxies)

    def tiktok_objects(self) -> dict[str, dict]:
        """Every audience in the TikTok sandbox: id → its record (name, persons)."""
        with self.tiktok._lock:
            return {a: dict(record) for a, record in self.tiktok.audiences.items()}

    def pinterest_objects(self) -> dict[str, dict]:
        """Every customer list in the Pinterest sandbox: id → {name, members}."""
        with self.pinterest._lock:
            return {
                i: {"name": record["name"], "members": set(self.pinterest._members[i])}
                for i, record in self.pinterest._lists.items()
            }

    def close(self) -> None:
        ads = (self.meta_proxy, self.google_proxy, self.tiktok_proxy, self.pinterest_proxy)
        self.sink.extend(e.body for p in ads for e in p.exchanges if e.body)
        for proxy in self.proxies:
            proxy.close()
        for server in self.servers:
            server.close()


@dataclass
class DestinationCheck:
    """Destination state against the desired state, and duplicate effects."""

    diverged: int = 0  # (segment, destination, person) whose destination state differs from desired
    pending: int = 0  # items the engine would still send (desired − acknowledged)
    # Customer.io events accepted more than once + items acknowledged twice + people held by a second object of
    # one segment (an audience or list the pipeline created and then lost track of: it is never updated again).
    duplicates: int = 0
    dropped_duplicate_events: int = 0  # resends the event ids deduplicated (the ids doing their job)
    orphans: list[str] = field(default_factory=list)  # "destination segment: id (n people)", untracked
    orphan_people: dict[str, int] = field(default_factory=dict)  # destination → people in untracked objects
    details: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return self.diverged == 0 and self.pending == 0

    def only(self, destination: str) -> bool:
        """Every difference found concerns `destination` (its objects or its people): nothing pending, every
        duplicate a person held by one of its untracked objects."""
        return (
            self.pending == 0
            and self.duplicates == self.orphan_people.get(destination, 0)
            and all(f"/{destination}" in d for d in self.details)
        )

    def diff(self, label: str, want: set, have: set) -> None:
        missing, extra = len(want - have), len(have - want)
        if missing or extra:
            self.diverged += missing + extra
            self.details.append(f"{label}: {missing} missing, {extra} extra of {len(want)}")


# -------------------------------------------------------------------------------------------------- workspace


class Suite:
    """Shared by every scenario: the tenant, its sandbox on loopback behind the fault proxy, the transcript."""

    def __init__(self, root: Path, console: Console | None = None) -> None:
        self.root = root
        self.console = console or Console()
        self.transcript = Transcript()
        self.tenant: SandboxTenant = build_tenant(SPEC)
        self.sandbox = MetronomeSandbox(self.tenant, usage_page_size=500)
        self.server = self.sandbox.serve()
        self.proxy = FaultProxy(self.server.url, page_limits=PAGE_LIMITS)
        self.contacts_csv = root / "contacts.csv"
        self.tenant.contacts_frame().to_csv(self.contacts_csv, index=False)
        self._counter = 0
        self._last_progress = time.monotonic()
        self.base_daily: Path | None = None
        self.ad_bodies: list[bytes] = []
        self.extraction_requests = 0
        from retention_pipeline.segments.definitions import SEGMENTS

        self.segments = SEGMENTS
        tenant = self.tenant
        self.deleted_customer = min(
            c["id"]
            for c in tenant.customers
            if c["archived_at"] is None
            and all(objects.get(c["id"]) for objects in (tenant.contracts, tenant.invoices, tenant.balances))
        )  # the customer the "deleted between list and detail" fault removes

    def progress(self, row) -> None:
        now = time.monotonic()
        row.seconds = round(now - self._last_progress, 1)
        self._last_progress = now
        status = "ok  " if row.ok else "FAIL"
        self.console.print(
            f"  {status} {row.fault[:78]:78} {row.recovered}/{row.cases} lost={row.rows_lost} "
            f"dup={row.duplicates} inj={row.injections} {row.seconds:.0f}s"
        )

    def close(self) -> None:
        self.proxy.close()
        self.server.close()

    def workspace(
        self, name: str, *, history_days: int = EXTRACTION_HISTORY_DAYS, destinations: bool = False
    ):
        self._counter += 1
        path = self.root / f"{self._counter:03d}-{name}"
        path.mkdir(parents=True)
        return Workspace(
            self,
            path,
            name,
            history_days,
            Destinations(path, self.segments, self.ad_bodies) if destinations else None,
        )


class Workspace:
    """One scenario's files, env and destinations."""

    def __init__(
        self, suite: Suite, path: Path, name: str, history_days: int, destinations: Destinations | None
    ):
        self.suite, self.path, self.name = suite, path, name
        self.destinations = destinations
        self.history_days = history_days
        self.db = path / "retention.duckdb"
        self.env: dict[str, str] = {
            "METRONOME_BEARER_TOKEN": SECRETS["METRONOME_BEARER_TOKEN"],
            "METRONOME_API_URL": suite.proxy.url,
            "RETENTION_METRONOME_TIMEOUT_S": "2",
            "RETENTION_METRONOME_MAX_RETRIES": "3",
            "RETENTION_DESTINATION_TIMEOUT_S": str(DESTINATION_TIMEOUT_S),
            "RETENTION_METRONOME_CONCURRENCY": "4",
            "RETENTION_HISTORY_DAYS": str(history_days),
            "RETENTION_HOURLY_HISTORY_DAYS": "2",
            "RETENTION_CONTACTS_PATH": str(suite.contacts_csv),
            "RETENTION_DUCKDB_PATH": str(self.db),
            "RETENTION_PUBLISHED_PATH": str(path / "published.duckdb"),
            "RETENTION_EXPORT_DIR": str(path / "exports"),
            "RETENTION_WEBHOOK_INBOX": str(path / "inbox.sqlite3"),
        }
        if destinations is not None:
            # Every scenario gets fresh destination sandboxes on new ports, often on a file prepared with others: a
            # new target by design, so the switch is allowed (nothing acknowledged by the old one carries over).
            self.env.update(
                destinations.env()
                # Fresh files with real-looking destinations: the first-run flag is a deliberate choice here.
                | {"RETENTION_ALLOW_TARGET_CHANGE": ",".join(DESTINATION_NAMES), "RETENTION_FIRST_RUN": "1"}
            )
        self.runs = 0

    def close(self) -> None:
        if self.destinations is not None:
            self.destinations.close()

    # --- running -------------------------------------------------------------------------------------------

    def run(
        self,
        job: str,
        partition: str,
        selection: list[list[str]] | None = None,
        run_config: dict | None = None,
        env: dict[str, str] | None = None,
    ) -> Outcome:
        """One in-process run, configured only by env vars, everything it writes captured."""
        self.runs += 1
        source = f"{self.name} run {self.runs} ({job} {partition})"
        instance = dg.DagsterInstance.ephemeral()
        started = time.monotonic()
        with environ({**self.env, **(env or {})}), captured_fds(self.suite.transcript, source):
            result = (
                _defs()
                .resolve_job_def(job)
                .execute_in_process(
                    partition_key=partition,
                    asset_selection=[dg.AssetKey(k) for k in selection] if selection else None,
                    run_config=run_config,
                    instance=instance,
                    raise_on_error=False,
                )
            )
        outcome = outcome_of(result, instance, self.suite.transcript, source, time.monotonic() - started)
        del result, instance
        gc.collect()  # a failed step can leave its DuckDB connection referenced from a traceback
        return outcome

    def spawn(self, job: str, partition: str, selection: list[list[str]] | None = None) -> Child:
        """The same run in a child process (for kill -9); its output goes to the transcript when it ends."""
        self.runs += 1
        keys = "None" if not selection else repr(selection)
        code = (
            "import sys, dagster as dg\n"
            "from retention_pipeline.definitions import defs\n"
            f"keys = {keys}\n"
            f"result = defs.resolve_job_def({job!r}).execute_in_process(partition_key={partition!r}, "
            "asset_selection=[dg.AssetKey(k) for k in keys] if keys else None, raise_on_error=False)\n"
            "sys.exit(0 if result.success else 1)\n"
        )
        log = self.path / f"child-{self.runs}.log"
        handle = log.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            env=child_env(self.env),
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        return Child(
            process, log, handle, self.suite.transcript, f"{self.name} child {self.runs} ({job} {partition})"
        )

    # --- reading -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection; if a failed run left a connection open in this process (dagster-duckdb closes
        its connection only when the block ends without an exception), read a copy of the file instead."""
        try:
            con = duckdb.connect(str(self.db), read_only=True)
        except duckdb.ConnectionException:
            gc.collect()
            copy = self.path / "read-copy.duckdb"
            shutil.copyfile(self.db, copy)
            wal = self.db.with_name(self.db.name + ".wal")
            if wal.exists():
                shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
            con = duckdb.connect(str(copy), read_only=True)
        with con:
            yield con

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with self.read() as con:
            return con.execute(sql, params or []).fetchall()

    def snapshot_db(self, target: Path) -> None:
        shutil.copyfile(self.db, target)

    def adopt_db(self, source: Path) -> None:
        shutil.copyfile(source, self.db)

    # --- raw tables against the tenant ----------------------------------------------------------------------

    def raw_check(
        self,
        usage: list[tuple[str, datetime, datetime]],
        *,
        deleted_customers: set[str] = frozenset(),
        contacts_rows: int | None = None,
        null_means_zero: bool = False,
    ) -> RawCheck:
        """Every raw table against the tenant: ids of snapshot objects, usage rows (key and value) per window."""
        tenant, check = self.suite.tenant, RawCheck()
        truth = {
            "raw.metronome_customers": {c["id"] for c in tenant.customers},
            "raw.metronome_billable_metrics": {m["id"] for m in tenant.billable_metrics},
            "raw.metronome_contracts": _ids(tenant.contracts, deleted_customers),
            "raw.metronome_invoices": _ids(tenant.invoices, deleted_customers),
            "raw.metronome_balances": _ids(tenant.balances, deleted_customers),
        }
        if not self.db.exists():
            check.lost = sum(len(v) for v in truth.values())
            check.details.append("no DuckDB file")
            return check
        with self.read() as con:
            tables = {
                f"{s}.{t}"
                for s, t in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
            }
            for table, ids in truth.items():
                rows = con.execute(f"SELECT id FROM {table}").fetchall() if table in tables else []
                stored = [r[0] for r in rows]
                check.add(table, ids, set(stored), len(stored) - len(set(stored)))
            for window_size, start, end in usage:
                expected = usage_truth(tenant, window_size, start, end)
                rows = (
                    con.execute(
                        "SELECT customer_id, billable_metric_id, start_timestamp, value FROM raw.metronome_usage "
                        "WHERE window_size = ? AND start_timestamp >= ? AND start_timestamp < ?",
                        [window_size, start.replace(tzinfo=None), end.replace(tzinfo=None)],
                    ).fetchall()
                    if "raw.metronome_usage" in tables
                    else []
                )
                stored = {
                    (c, m, s.replace(tzinfo=UTC)): (0.0 if v is None and null_means_zero else v)
                    for c, m, s, v in rows
                }
                wrong = sum(1 for k, v in expected.items() if k in stored and stored[k] != v)
                check.add(
                    f"raw.metronome_usage {window_size}", set(expected), set(stored), len(rows) - len(stored)
                )
                check.lost += wrong
                if wrong:
                    check.details.append(f"usage {window_size}: {wrong} values differ")
            if contacts_rows is not None:
                people = (
                    con.execute("SELECT count(*) FROM raw.contacts").fetchone()[0]
                    if "raw.contacts" in tables
                    else 0
                )
                rejected = (
                    con.execute("SELECT count(*) FROM raw.contacts_rejected").fetchone()[0]
                    if "raw.contacts_rejected" in tables
                    else 0
                )
                if people + rejected != contacts_rows:
                    check.lost += abs(contacts_rows - people - rejected)
                    check.details.append(
                        f"contacts: {people} + {rejected} rejected ≠ {contacts_rows} CSV rows"
                    )
        return check

    def _plan(self, con: duckdb.DuckDBPyConnection, cadence: str) -> None:
        """The engine's own plan of the cadence's next sync (sync_desired, sync_plan) on `con`, with this
        workspace's targets."""
        from retention_pipeline.destinations.assets import next_units
        from retention_pipeline.destinations.sync import compute_plan, ensure_tables

        with environ(self.env):
            ensure_tables(con)
            compute_plan(con, next_units(con, self.suite.segments, cadence))

    def plan_size(self, cadence: str) -> tuple[int, int]:
        """(items, segment × destination pairs) the next sync of the cadence would send."""
        plan = self.plan(cadence)
        return sum(plan.values()), len({(segment, destination) for segment, destination, _ in plan})

    def plan(self, cadence: str) -> dict[tuple[str, str, str], int]:
        """(segment, destination, operation) → items the next sync of the cadence would send."""
        copy = self.path / "plan.duckdb"
        shutil.copyfile(self.db, copy)
        with duckdb.connect(str(copy)) as con:
            self._plan(con, cadence)
            rows = con.execute(
                "SELECT segment, destination, operation, count(*) FROM sync_plan GROUP BY ALL"
            ).fetchall()
        copy.unlink()
        return {(segment, destination, operation): n for segment, destination, operation, n in rows}

    def query_count_raw_containing(self, marker: str) -> int:
        """Snapshot objects whose stored `raw` JSON contains the marker (what the API sent is kept verbatim)."""
        tables = ["raw.metronome_customers", "raw.metronome_billable_metrics", "raw.metronome_contracts",
                  "raw.metronome_invoices", "raw.metronome_balances"]  # fmt: skip
        with self.read() as con:
            return sum(
                con.execute(
                    f"SELECT count(*) FROM {t} WHERE CAST(raw AS VARCHAR) LIKE ?", [f"%{marker}%"]
                ).fetchone()[0]
                for t in tables
            )

    # --- destinations against the desired state ---------------------------------------------------------------

    def _recorded_objects(self, con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
        """destination → segment → the object id the pipeline recorded for this workspace's account (what it
        syncs into from now on), for the destinations whose objects it creates."""
        from retention_pipeline.destinations import registry
        from retention_pipeline.destinations.objects import ensure_tables, recorded

        ensure_tables(con)
        with environ(self.env):
            accounts = {d: registry.plugin(d).target().identity for d in CREATED}
        return {d: recorded(con, d, account) for d, account in accounts.items()}

    def _check_created_objects(
        self, check: DestinationCheck, names: list[str], want: dict, recorded: dict
    ) -> None:
        """TikTok audiences and Pinterest customer lists, which the pipeline creates: the recorded object of each
        segment holds exactly the desired people, and no other object in the sandbox holds anyone (an object
        created and then lost track of is never updated again: its people count as duplicates)."""
        from retention_pipeline.destinations.routing import default_name

        d = self.destinations
        routed = {s.name: s.destinations for s in self.suite.segments}
        segment_of = {default_name(s.name): s.name for s in self.suite.segments}
        objects = {
            "tiktok": {i: {"name": a["name"], "members": {frozenset(p) for p in a["persons"]}}
                       for i, a in d.tiktok_objects().items() if a["type"] != "Lookalike Audience"},
            "pinterest": d.pinterest_objects(),
        }  # fmt: skip
        for destination in CREATED:
            ids = recorded.get(destination, {})
            for segment in names:
                if destination not in routed.get(segment, ()):
                    continue
                people = want.get((segment, destination), {}).values()
                if destination == "tiktok":
                    desired = {frozenset((k, v) for k, v in p.items() if v) for p in people}
                else:
                    desired = {p["EMAIL"] for p in people if p.get("EMAIL")}
                object_id = ids.get(segment)
                if object_id is not None and object_id not in objects[destination]:
                    check.details.append(
                        f"{segment}/{destination}: recorded {object_id} is not in the sandbox"
                    )
                held = objects[destination].get(object_id, {}).get("members", set())
                check.diff(f"{segment}/{destination}", desired, held)
            for object_id, record in objects[destination].items():
                if object_id in ids.values():
                    continue
                segment = segment_of.get(record["name"], record["name"])
                check.orphans.append(
                    f"{destination} {segment}: {object_id} ({len(record['members'])} people)"
                )
                if record["members"]:
                    check.duplicates += len(record["members"])
                    check.orphan_people[destination] = check.orphan_people.get(destination, 0) + len(
                        record["members"]
                    )
                    check.details.append(
                        f"{segment}/{destination}: untracked {object_id} holds {len(record['members'])} people"
                    )

    def destination_check(self, cadence: str) -> DestinationCheck:
        d, check = self.destinations, DestinationCheck()
        names = [s.name for s in self.suite.segments if s.cadence == cadence and s.purpose == "target"]
        copy = self.path / "check.duckdb"
        shutil.copyfile(
            self.db, copy
        )  # the engine's own plan over a private copy: nothing here can touch the file
        with duckdb.connect(str(copy)) as con:
            con.execute("SET TimeZone = 'UTC'")
            self._plan(con, cadence)
            check.pending = con.execute("SELECT count(*) FROM sync_plan").fetchone()[0]
            desired = con.execute(
                "SELECT segment, destination, member_key, CAST(payload AS VARCHAR) FROM sync_desired "
                "WHERE payload IS NOT NULL AND member_key IS NOT NULL"
            ).fetchall()
            acked_twice = con.execute(
                "SELECT count(*) FROM (SELECT 1 FROM sync.ledger_items WHERE status = 'acked' "
                "GROUP BY segment, destination, member_key, operation, payload_hash HAVING count(*) > 1)"
            ).fetchone()[0]
            recorded = self._recorded_objects(con)
        copy.unlink()
        want: dict[tuple[str, str], dict[str, dict]] = {}
        for segment, destination, key, payload in desired:
            want.setdefault((segment, destination), {})[key] = json.loads(payload)
        for segment in names:
            people = want.get((segment, "customerio"), {})
            if segment in d.cio_segments:
                have = d.cio.segment_members(d.cio_segments[segment])
                check.diff(f"{segment}/customerio segment", set(people), have)
            tier = f"rp_{segment}_tier"
            tiers = {p["id"]: p["attributes"].get(tier) for p in d.cio.people() if p["attributes"].get(tier)}
            check.diff(f"{segment}/customerio attributes", set(people), set(tiers))
            check.diverged += sum(1 for k, p in people.items() if k in tiers and tiers[k] != p.get("tier"))
            if segment in d.audiences:
                rows = {
                    frozenset((k, v) for k, v in p.items() if v)
                    for p in want.get((segment, "meta"), {}).values()
                }
                have = {frozenset(r.items()) for r in d.meta.member_rows(d.audiences[segment])}
                check.diff(f"{segment}/meta", rows, have)
            if segment in d.user_lists:
                members = want.get((segment, "google"), {}).values()
                list_id = d.user_lists[segment]
                for kind in ("emailAddress", "phoneNumber"):
                    check.diff(f"{segment}/google {kind}", {m[kind] for m in members if m.get(kind)},
                               d.google.members(list_id, kind))  # fmt: skip
                if d.google.member_count(list_id) != len(members):
                    check.diverged += abs(d.google.member_count(list_id) - len(members))
                    check.details.append(
                        f"{segment}/google: {d.google.member_count(list_id)} ≠ {len(members)}"
                    )
        events = d.cio.accepted_events()
        keys = [
            (e["identifiers"].get("id"), e["attributes"].get("segment"), e["name"], e["timestamp"])
            for e in events
        ]
        check.duplicates = len(keys) - len(set(keys)) + acked_twice
        self._check_created_objects(check, names, want, recorded)
        check.dropped_duplicate_events = d.cio.duplicate_events_dropped
        if check.pending:
            check.details.append(f"{check.pending} planned items never acknowledged")
        return check


@dataclass
class RawCheck:
    lost: int = 0  # rows of the truth missing or with a wrong value
    extra: int = 0  # rows that are not in the truth
    duplicates: int = 0  # the same key stored twice
    details: list[str] = field(default_factory=list)
    tables: dict[str, tuple[int, int, int, int]] = field(
        default_factory=dict
    )  # lost, extra, duplicated, truth

    def partial(self) -> list[str]:
        """Tables holding neither nothing nor the whole truth: a snapshot or window visible half-written."""
        return [
            table
            for table, (lost, extra, duplicated, total) in self.tables.items()
            if 0 < lost < total or extra or duplicated
        ]

    def add(self, table: str, truth: set, stored: set, duplicates: int) -> None:
        lost, extra = len(truth - stored), len(stored - truth)
        self.tables[table] = (lost, extra, duplicates, len(truth))
        self.lost += lost
        self.extra += extra
        self.duplicates += duplicates
        if lost or extra or duplicates:
            self.details.append(
                f"{table}: {lost} lost, {extra} unexpected, {duplicates} duplicated of {len(truth)}"
            )

    @property
    def equal(self) -> bool:
        return self.lost == 0 and self.extra == 0 and self.duplicates == 0


def _ids(objects: dict[str, list[dict]], deleted: set[str]) -> set[str]:
    return {o["id"] for customer, items in objects.items() if customer not in deleted for o in items}


def usage_truth(tenant: SandboxTenant, window_size: str, start: datetime, end: datetime) -> dict:
    """What raw.metronome_usage must hold for windows starting in [start, end) and ending by `end`."""
    frame = tenant.usage_frame(window_size, start, ceil_day(end))
    frame = frame[frame["end_timestamp"] <= end]
    return {
        (r.customer_id, r.billable_metric_id, r.start_timestamp.to_pydatetime()): r.value
        for r in frame.itertuples(index=False)
    }


def daily_usage_window(history_days: int) -> tuple[str, datetime, datetime]:
    """The day windows a first daily run of DAY backfills."""
    return ("DAY", DAY_END - timedelta(days=history_days), DAY_END)


class Child:
    """A run in a child process."""

    def __init__(
        self, process: subprocess.Popen, log: Path, handle, transcript: Transcript, source: str
    ) -> None:
        self.process, self.log, self._handle, self._transcript, self.source = (
            process,
            log,
            handle,
            transcript,
            source,
        )
        self.started = time.monotonic()
        self.code: int | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.kill(self.process.pid, 9)
        self.wait()

    def wait(self, timeout: float = 300) -> int:
        if self.code is None:
            self.code = self.process.wait(timeout)
            self._handle.close()
            self._transcript.add(self.source, self.log.read_text(errors="replace"))
        return self.code
