"""A deterministic synthetic Metronome tenant.

`build_tenant(spec)` is a pure function of `TenantSpec`: ids are uuid5 of (seed, kind, index), every random draw
comes from a seeded numpy stream, and every date is relative to `now`, so pinning the clock pins the tenant byte
for byte. Each customer carries a retention profile (steady, declining, lapsed, ...) that shapes its usage,
contracts, invoices and balances; `profiles` keeps that ground truth off the wire for tests and docs. Churn is
drawn, not ruled: a hazard on latent traits picks the churners, most fade before they stop, some customers who
stay dip and recover, and rhythms differ (docs/sandbox-churn.md; `rhythms`, `churn_days`, `precursor_days`,
`dips` hold that ground truth).

Usage lives in one dense `uint32` array [customer, metric, hour] built with numpy (no per-hour Python loops), so
10k customers stay feasible. Everything else is plain wire dicts, exactly as the API returns them. Ingested events
go to a per-instance overlay, so a cached tenant is never mutated by one test and seen by another.
"""

from __future__ import annotations

import calendar
import copy
import functools
import hashlib
import math
import re
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

USD_CREDIT_TYPE_ID = "2714e483-4ff1-48e4-9e25-ac732e8f24f2"
USD_CREDIT_TYPE = {"id": USD_CREDIT_TYPE_ID, "name": "USD (cents)"}

PROFILES = (
    "steady",
    "declining",
    "lapsed",
    "credits_low",
    "failed_payment",
    "failed_then_paid",
    "renewal_7d",
    "renewal_30d",
    "renewed_recently",
    "archived",
    "new",
    "churning",
)

WINDOW_SECONDS = {"HOUR": 3600, "DAY": 86_400, "NONE": 0}
INGEST_MAX_BATCH = 100
INGEST_MAX_BACKDATE = timedelta(days=34)
INGEST_MAX_FUTURE = timedelta(days=1)

_DAY = 86_400
_HOUR = 3600
_NEVER = 1 << 30  # a day index no churner reaches
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "retention-pipeline/metronome-sandbox")
_CREATED_BY = "retention-sandbox"

# Shares of the non-steady profiles; steady takes the rest (~35%, then churning takes 4% of all customers from
# it). The minimums make every variant of a profile appear even in a small tenant (both decline depths, all three
# lapse buckets, both failure statuses).
_PROFILE_SHARES = {
    "declining": 0.10,
    "lapsed": 0.10,
    "credits_low": 0.08,
    "failed_payment": 0.06,
    "failed_then_paid": 0.04,
    "renewal_7d": 0.05,
    "renewal_30d": 0.06,
    "renewed_recently": 0.06,
    "archived": 0.05,
    "new": 0.05,
}
_PROFILE_MINIMUM = {"declining": 2, "lapsed": 4, "failed_payment": 2}
MIN_CUSTOMERS = 20
MIN_HISTORY_DAYS = 35  # five weeks: two full comparison weeks plus at least one finalized monthly invoice

# Independent random streams, so adding draws to one part of the generator never reshuffles another.
_STREAM_CUSTOMERS, _STREAM_USAGE, _STREAM_CONTRACTS, _STREAM_BALANCES, _STREAM_INVOICES, _STREAM_CONTACTS = (
    range(6)
)
_STREAM_CHURN = 6  # appended last: latent traits, rhythms, precursors and dips (docs/sandbox-churn.md)

# Churn dynamics. Who churns is drawn, not ruled: every customer of the churn pool gets an exponential time to
# churn whose rate (hazard) rises with low engagement and a sparse rhythm; the first to churn become lapsed,
# archived or churning (mid-way through a pre-churn phase today). Other profiles describe a current state and keep
# their members. See docs/sandbox-churn.md for what a model can and cannot learn from this.
_CHURN_POOL = ("steady", "lapsed", "archived")
_CHURNING_SHARE = 0.04  # taken from the steady customers of the pool
_HAZARD_ENGAGEMENT = 0.3  # log-hazard per standard deviation of (lower) engagement
_HAZARD_SPARSITY = 1.0  # log-hazard per unit of (1 - share of days a rhythm is active)
_ENGAGEMENT_VOLUME = 0.4  # correlation between engagement and log usage volume
# Regular, week-stable rhythms, so a steady customer's week-over-week usage stays flat. Rows: days of the week
# active, counted from the customer's own first weekday (workdays from Monday); every_other_day alternates instead.
_RHYTHMS = ("daily", "workdays", "every_other_day", "three_a_week", "two_a_week", "weekly")
_RHYTHM_SHARES = (0.50, 0.12, 0.12, 0.10, 0.08, 0.08)  # from most to least engaged
_RHYTHM_DAYS = np.array(
    [
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 0, 1, 0, 1, 0, 1],  # placeholder: every_other_day follows the calendar day, not the weekday
        [1, 0, 1, 0, 1, 0, 0],
        [1, 0, 0, 1, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0],
    ],
    dtype=bool,
)
_RHYTHM_ACTIVE_SHARE = np.array([1, 5 / 7, 1 / 2, 3 / 7, 2 / 7, 1 / 7])
_DAILY, _WORKDAYS, _EVERY_OTHER_DAY = 0, 1, 2
# Profiles whose tests compare two single weeks: only dense rhythms keep one day's noise out of that ratio.
_DENSE_RHYTHM_PROFILES = ("declining", "renewal_7d")
_PRECURSOR_SHARE = 0.7  # churners of the history that fade first; the rest stop abruptly
_PRECURSOR_DAYS = (14, 42)
_PRECURSOR_FLOOR = (0.1, 0.5)  # usage left on the last days, as a share of the usual
_PRECURSOR_SKIP = (0.3, 0.75)  # share of scheduled days skipped on the last days
_DIP_SHARE = 0.3  # non-churners with one temporary dip (a false alarm)
_DIP_PROFILES = ("steady", "credits_low", "failed_then_paid", "renewal_30d", "renewed_recently")
_DIP_DAYS = (7, 21)
_DIP_DEPTH = (0.4, 0.7)  # usage during the dip, as a share of the usual
_DIP_SKIP = (0.0, 0.5)


@dataclass(frozen=True)
class _Metric:
    name: str
    event_type: str
    aggregation_type: str
    aggregation_key: str | None
    product_name: str
    unit_price: float  # cents per unit


_METRICS = (
    _Metric("api_calls", "api_call", "COUNT", None, "API calls", 0.05),
    _Metric("tokens", "completion", "SUM", "tokens", "Tokens", 0.0004),
    _Metric("compute_seconds", "job", "SUM", "seconds", "Compute seconds", 0.02),
)
_ARCHIVED_METRIC = _Metric("legacy_requests", "legacy_request", "COUNT", None, "Legacy requests", 0.0)


class InvalidRequest(ValueError):
    """A request the real API rejects with 400; the message is what goes on the wire."""


@dataclass(frozen=True)
class TenantSpec:
    """Everything the generator depends on; equal specs give identical tenants."""

    seed: int = 42
    customers: int = 300
    history_days: int = 120
    metrics: int = 3
    now: datetime | None = None

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"TenantSpec.seed must be non-negative, got {self.seed}")
        if self.customers < MIN_CUSTOMERS:
            raise ValueError(f"TenantSpec.customers must be at least {MIN_CUSTOMERS}, got {self.customers}")
        if self.history_days < MIN_HISTORY_DAYS:
            raise ValueError(
                f"TenantSpec.history_days must be at least {MIN_HISTORY_DAYS}, got {self.history_days}"
            )
        if self.metrics not in (2, 3):
            raise ValueError(f"TenantSpec.metrics must be 2 or 3, got {self.metrics}")
        if self.now is not None and self.now.utcoffset() is None:
            raise ValueError("TenantSpec.now must be timezone-aware")


def build_tenant(spec: TenantSpec) -> SandboxTenant:
    """Build (or reuse the cached immutable part of) the tenant for `spec`, with a fresh ingest overlay."""
    now = (spec.now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return SandboxTenant(_build_core(replace(spec, now=now)))


@dataclass(frozen=True)
class UsagePlan:
    """The shape of one POST /v1/usage answer: which customers, metrics and windows, and where each row falls.

    Rows are ordered customer id, metric id, window start; customer `i` of `customers` owns rows
    [row_ends[i] - row_counts[i], row_ends[i]), so any page can be built without materialising the others.
    """

    window_seconds: int
    start: int  # epoch seconds of the first window
    n_windows: int  # windows that have ended at or before `now`
    customers: np.ndarray  # tenant customer indices, in id order
    metrics: np.ndarray  # tenant metric indices, in id order
    first_window: np.ndarray  # per customer: first window ending after the customer was created
    row_counts: np.ndarray
    row_ends: np.ndarray

    @property
    def total_rows(self) -> int:
        return int(self.row_ends[-1]) if len(self.row_ends) else 0


@dataclass(frozen=True)
class UsageRows:
    """A slice of a usage answer as parallel arrays (tenant indices, not wire strings)."""

    customer: np.ndarray
    metric: np.ndarray
    window: np.ndarray
    value: np.ndarray


@dataclass(frozen=True, eq=False)
class _Core:
    """The immutable, cacheable part of a tenant."""

    spec: TenantSpec
    now: datetime
    grid_start: datetime
    customers: list[dict]
    billable_metrics: list[dict]
    credit_types: list[dict]
    contracts: dict[str, list[dict]]
    invoices: dict[str, list[dict]]
    balances: dict[str, list[dict]]
    profiles: dict[str, str]
    rhythms: dict[str, str]
    churn_days: dict[str, int]
    precursor_days: dict[str, int]
    dips: dict[str, tuple[int, int]]
    contacts: pd.DataFrame
    hourly: np.ndarray  # uint32 [customer, metric, hour since grid_start]; hours not yet ended are 0
    daily: np.ndarray  # float64 [customer, metric, day since grid_start]
    created_s: np.ndarray  # epoch seconds per customer
    customer_ids: tuple[str, ...]
    customer_id_set: frozenset[str]
    customer_lookup: dict[str, int]  # Metronome id or ingest alias -> customer index
    customer_order: np.ndarray  # customer indices sorted by id
    metric_ids: tuple[str, ...]
    metric_names: tuple[str, ...]
    metric_lookup: dict[str, int]
    metric_order: np.ndarray
    archived_metric_ids: frozenset[str]
    # event_type -> ((metric index, property to SUM or None to COUNT), ...)
    event_metrics: dict[str, tuple[tuple[int, str | None], ...]]


class SandboxTenant:
    """One synthetic Metronome account: wire dicts, dense usage, and a private overlay of ingested events.

    Treat the wire dicts as read-only: they are shared with every tenant built from the same spec.
    """

    def __init__(self, core: _Core) -> None:
        self._core = core
        self.spec = core.spec
        self.now = core.now
        self.customers = core.customers
        self.billable_metrics = core.billable_metrics
        self.credit_types = core.credit_types
        self.contracts = core.contracts
        self.invoices = core.invoices
        self.balances = core.balances
        self.profiles = core.profiles
        # More ground truth, off the wire, in days relative to today (00:00 UTC; negative = in the past):
        # each customer's usage rhythm; for every churner the first day without usage (lapsed and archived:
        # past, churning: ahead); for churners that faded first the length of that pre-churn phase; and for
        # non-churners with a temporary dip its [start, end) days.
        self.rhythms = core.rhythms
        self.churn_days = core.churn_days
        self.precursor_days = core.precursor_days
        self.dips = core.dips
        self.default_activity_metric = _METRICS[0].name
        self._lock = threading.Lock()
        self._overlay: dict[int, dict[tuple[int, int], float]] = {}
        self._seen_transactions: set[str] = set()

    @property
    def customer_ids(self) -> tuple[str, ...]:
        return self._core.customer_ids

    @property
    def metric_ids(self) -> tuple[str, ...]:
        return self._core.metric_ids

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self._core.metric_names

    def contacts_frame(self) -> pd.DataFrame:
        """People per customer, as a CRM export would give them: messy on purpose, plus two orphan rows."""
        return self._core.contacts.copy()

    def plan_usage(
        self,
        window_size: str,
        starting_on: datetime,
        ending_before: datetime,
        customer_ids: list[str] | None = None,
        billable_metric_ids: list[str] | None = None,
    ) -> UsagePlan:
        """Validate a usage query the way the API does and lay out its dense grid of rows."""
        core = self._core
        window = _window_size(window_size)
        start = _midnight_seconds(starting_on, "starting_on")
        end = _midnight_seconds(ending_before, "ending_before")
        if end < start + _DAY:
            raise InvalidRequest("ending_before must be at least one day after starting_on")
        window_seconds = WINDOW_SECONDS[window] or end - start
        visible = (int(self.now.timestamp()) - start) // window_seconds
        n_windows = max(0, min((end - start) // window_seconds, visible))

        if customer_ids is None:
            customers = core.customer_order
        else:
            unknown = [cid for cid in customer_ids if cid not in core.customer_id_set]
            if unknown:
                raise InvalidRequest(f"Unknown customer_ids: {', '.join(unknown[:5])}")
            customers = np.array(
                sorted(
                    {core.customer_lookup[cid] for cid in customer_ids}, key=core.customer_ids.__getitem__
                ),
                dtype=np.int64,
            )
        if billable_metric_ids is None:
            metrics = core.metric_order
        else:
            for metric_id in billable_metric_ids:
                if metric_id in core.archived_metric_ids:
                    raise InvalidRequest(f"Billable metric {metric_id} is archived")
                if metric_id not in core.metric_lookup:
                    raise InvalidRequest(f"Unknown billable metric {metric_id}")
            metrics = np.array(
                sorted({core.metric_lookup[m] for m in billable_metric_ids}, key=core.metric_ids.__getitem__),
                dtype=np.int64,
            )

        first = np.clip((core.created_s[customers] - start) // window_seconds, 0, n_windows)
        counts = len(metrics) * (n_windows - first)
        return UsagePlan(
            window_seconds, start, n_windows, customers, metrics, first, counts, np.cumsum(counts)
        )

    def usage_rows(self, plan: UsagePlan, start: int, stop: int) -> UsageRows:
        """Rows [start, stop) of a planned usage answer, ingested events included."""
        stop = min(stop, plan.total_rows)
        begins = plan.row_ends - plan.row_counts
        first_customer = int(np.searchsorted(plan.row_ends, start, side="right"))
        last_customer = int(np.searchsorted(begins, stop, side="left"))
        metric_position = {int(m): i for i, m in enumerate(plan.metrics)}
        with self._lock:
            overlay = {
                int(c): list(self._overlay[int(c)].items())
                for c in plan.customers[first_customer:last_customer]
                if int(c) in self._overlay
            }
        parts: list[tuple[np.ndarray, ...]] = []
        for position in range(first_customer, last_customer):
            customer = int(plan.customers[position])
            first_window = int(plan.first_window[position])
            n_windows = plan.n_windows - first_window
            if n_windows <= 0:
                continue
            block = self._usage_block(plan, customer, first_window)
            for (metric, hour), value in overlay.get(customer, ()):
                window = (hour * _HOUR - plan.start) // plan.window_seconds
                if metric in metric_position and first_window <= window < plan.n_windows:
                    block[metric_position[metric], window - first_window] += value
            lo = max(start - int(begins[position]), 0)
            hi = min(stop - int(begins[position]), block.size)
            local = np.arange(lo, hi)
            parts.append(
                (
                    np.full(hi - lo, customer, dtype=np.int64),
                    plan.metrics[local // n_windows],
                    first_window + local % n_windows,
                    block.ravel()[lo:hi],
                )
            )
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return UsageRows(empty, empty, empty, np.zeros(0))
        return UsageRows(*(np.concatenate(column) for column in zip(*parts, strict=True)))

    def _usage_block(self, plan: UsagePlan, customer: int, first_window: int) -> np.ndarray:
        core = self._core
        grid_start = int(core.grid_start.timestamp())
        if plan.window_seconds in (_HOUR, _DAY):
            source = core.hourly if plan.window_seconds == _HOUR else core.daily
            grid_index = (plan.start - grid_start) // plan.window_seconds + np.arange(
                first_window, plan.n_windows
            )
            inside = (grid_index >= 0) & (grid_index < source.shape[2])
            block = np.zeros((len(plan.metrics), len(grid_index)))
            block[:, inside] = source[customer][plan.metrics][:, grid_index[inside]]
            return block
        n_days = core.daily.shape[2]
        first_day = min(max((plan.start - grid_start) // _DAY, 0), n_days)
        last_day = min(max((plan.start + plan.window_seconds - grid_start) // _DAY, 0), n_days)
        return core.daily[customer][plan.metrics, first_day:last_day].sum(axis=1, keepdims=True)

    def usage_frame(
        self,
        window_size: str,
        starting_on: datetime,
        ending_before: datetime,
        customer_ids: list[str] | None = None,
        billable_metric_ids: list[str] | None = None,
    ) -> pd.DataFrame:
        """Exactly the rows POST /v1/usage returns for this query, in its order, across all pages."""
        plan = self.plan_usage(window_size, starting_on, ending_before, customer_ids, billable_metric_ids)
        rows = self.usage_rows(plan, 0, plan.total_rows)
        starts = pd.to_datetime(plan.start + rows.window * plan.window_seconds, unit="s", utc=True)
        return pd.DataFrame(
            {
                "customer_id": np.asarray(self._core.customer_ids, dtype=object)[rows.customer],
                "billable_metric_id": np.asarray(self._core.metric_ids, dtype=object)[rows.metric],
                "billable_metric_name": np.asarray(self._core.metric_names, dtype=object)[rows.metric],
                "start_timestamp": starts,
                "end_timestamp": starts + pd.Timedelta(seconds=plan.window_seconds),
                "value": rows.value.astype(np.float64),
            }
        )

    def ingest(self, events: list[dict]) -> None:
        """POST /v1/ingest: validate the whole batch, then add matched events to their hour, once per transaction.

        Like Metronome, events for unknown customers or no matching metric are accepted and simply match nothing.
        """
        core = self._core
        if not isinstance(events, list):
            raise InvalidRequest("Request body must be a JSON array of events")
        if len(events) > INGEST_MAX_BATCH:
            raise InvalidRequest(f"At most {INGEST_MAX_BATCH} events per request, got {len(events)}")
        earliest, latest = self.now - INGEST_MAX_BACKDATE, self.now + INGEST_MAX_FUTURE
        accepted: list[tuple[str, int | None, list[tuple[int, int, float]]]] = []
        for position, event in enumerate(events):
            if not isinstance(event, dict):
                raise InvalidRequest(f"Event {position} must be a JSON object")
            transaction_id = event.get("transaction_id")
            label = f"Event {position} (transaction_id {transaction_id!r})"
            for key in ("transaction_id", "customer_id", "event_type", "timestamp"):
                if not isinstance(event.get(key), str) or not event[key]:
                    raise InvalidRequest(f"{label}: {key} is required and must be a non-empty string")
            properties = event.get("properties", {})
            if not isinstance(properties, dict):
                raise InvalidRequest(f"{label}: properties must be an object")
            timestamp = parse_timestamp(event["timestamp"], f"{label}: timestamp")
            if not earliest <= timestamp <= latest:
                raise InvalidRequest(
                    f"{label}: timestamp {event['timestamp']} is outside the accepted range "
                    f"[{format_timestamp(earliest)}, {format_timestamp(latest)}]"
                )
            hour = math.floor(timestamp.timestamp() / _HOUR)
            contributions = []
            for metric, key in core.event_metrics.get(event["event_type"], ()):
                if key is None:
                    contributions.append((metric, hour, 1.0))
                elif (amount := _number(properties.get(key))) is not None:
                    contributions.append((metric, hour, amount))
            accepted.append((transaction_id, core.customer_lookup.get(event["customer_id"]), contributions))
        with self._lock:
            for transaction_id, customer, contributions in accepted:
                if transaction_id in self._seen_transactions:
                    continue
                self._seen_transactions.add(transaction_id)
                if customer is None:
                    continue
                buckets = self._overlay.setdefault(customer, {})
                for metric, hour, amount in contributions:
                    buckets[(metric, hour)] = buckets.get((metric, hour), 0.0) + amount


@functools.lru_cache(maxsize=1 << 16)  # generation formats the same day boundaries over and over
def format_timestamp(value: datetime | int) -> str:
    """RFC 3339 in the shape Metronome uses on the wire: UTC, milliseconds, `Z`."""
    if isinstance(value, int):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_timestamp(value: object, name: str) -> datetime:
    """Parse an RFC 3339 string with an explicit offset, or raise InvalidRequest naming the field."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRequest(f"{name} must be an RFC 3339 timestamp, got {value!r}") from None
    else:
        raise InvalidRequest(f"{name} must be an RFC 3339 timestamp")
    if parsed.utcoffset() is None:
        raise InvalidRequest(f"{name} must include a timezone offset, got {value!r}")
    return parsed.astimezone(UTC)


def _midnight_seconds(value: datetime | str, name: str) -> int:
    parsed = parse_timestamp(value, name)
    if (parsed.hour, parsed.minute, parsed.second, parsed.microsecond) != (0, 0, 0, 0):
        raise InvalidRequest(f"{name} must be aligned to UTC midnight, got {format_timestamp(parsed)}")
    return int(parsed.timestamp())


def _window_size(value: object) -> str:
    """HOUR, DAY or NONE; the OpenAPI enum also accepts the lowercase and Title case spellings."""
    if isinstance(value, str):
        for window in WINDOW_SECONDS:
            if value in (window, window.lower(), window.title()):
                return window
    raise InvalidRequest(f"window_size must be one of HOUR, DAY, NONE, got {value!r}")


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _add_months(value: datetime, months: int) -> datetime:
    """Calendar month arithmetic from a billing anchor, clamping to the month's last day like Metronome."""
    year, month = divmod(value.month - 1 + months, 12)
    year += value.year
    day = min(value.day, calendar.monthrange(year, month + 1)[1])
    return value.replace(year=year, month=month + 1, day=day)


def _ceil_cents(value: float) -> float:
    return math.ceil(value * 100) / 100


@functools.lru_cache(maxsize=4)
def _build_core(spec: TenantSpec) -> _Core:
    return _Generator(spec).build()


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Name parts for customers and contacts; small lists keep the output readable.
_COMPANY_WORDS = _words(
    "Acme Apex Arbor Atlas Aurora Beacon Birch Bright Cedar Cinder Cobalt Comet Crest Delta Ember "
    "Falcon Fable Fern Flint Forge Granite Harbor Helix Horizon Indigo Iris Juniper Kestrel Lumen "
    "Maple Meridian Nimbus Nova Oak Onyx Orbit Pine Prism Quartz Raven Ridge Sable Sierra Slate "
    "Solstice Spruce Summit Tidal Vertex Willow"
)
_COMPANY_NOUNS = _words(
    "Analytics Bio Cloud Data Dynamics Energy Foods Health Labs Logistics Media Networks Robotics "
    "Security Systems Studio Software Ventures Works"
)
_COMPANY_SUFFIXES = ("Inc", "LLC", "Ltd", "Co", "GmbH", "")
_FIRST_NAMES = _words(
    "Ada Alan Amara Ana Ben Carla Chen Dana Diego Eli Emma Farah Grace Hana Ivan Jamal Jin Kai Lara "
    "Leo Maya Mei Nia Noah Omar Priya Ravi Rosa Sam Sofia Tariq Uma Yara Zoe"
)
_LAST_NAMES = _words(
    "Abbott Bauer Costa Diaz Evans Fischer Garcia Haddad Ito Jensen Kim Lopez Moreau Nakamura Okafor "
    "Patel Quinn Rossi Santos Tanaka Umar Varga Weber Xu Young Zhang"
)
_AREA_CODES = ("415", "212", "312", "646", "206", "617", "512")


class _Generator:
    """Builds a `_Core` in dependency order: customers -> usage -> contracts -> invoices -> balances -> statuses."""

    def __init__(self, spec: TenantSpec) -> None:
        assert spec.now is not None
        self.spec = spec
        self.now = spec.now
        self.now_s = int(spec.now.timestamp())
        self.anchor = spec.now.replace(hour=0, minute=0, second=0, microsecond=0)
        self.anchor_s = int(self.anchor.timestamp())
        self.grid_start = self.anchor - timedelta(days=spec.history_days)
        self.grid_start_s = int(self.grid_start.timestamp())
        self.anchor_day = spec.history_days  # day index of today (the partial day)
        self.n_days = spec.history_days + 1
        self.visible_hours = (self.now_s - self.grid_start_s) // _HOUR
        self.metrics = _METRICS[: spec.metrics]
        self.n = spec.customers
        self.prices = np.array([m.unit_price for m in self.metrics])

    def rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.spec.seed, stream])

    def uid(self, kind: str, *parts: object) -> str:
        """uuid5(namespace, "seed:kind:parts"), formatted by hand because uuid.UUID dominates a 10k build."""
        name = ":".join(map(str, (self.spec.seed, kind, *parts))).encode()
        digest = bytearray(hashlib.sha1(_NAMESPACE.bytes + name).digest()[:16])
        digest[6] = (digest[6] & 0x0F) | 0x50
        digest[8] = (digest[8] & 0x3F) | 0x80
        h = digest.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def provider_id(self, prefix: str, kind: str, key: str) -> str:
        """A Stripe- or Salesforce-looking id derived from the seed."""
        return prefix + hashlib.sha1(f"{self.spec.seed}:{kind}:{key}".encode()).hexdigest()[:24]

    def day_ts(self, day: int) -> str:
        return format_timestamp(self.grid_start_s + day * _DAY)

    def day_index(self, value: datetime) -> int:
        return int((value - self.grid_start).total_seconds()) // _DAY

    def build(self) -> _Core:
        self._products()
        self._billable_metrics()
        self._customers()
        self._usage()
        self._contracts()
        self._invoices()
        self._balances()
        self._settle_invoices()
        contacts = self._contacts()
        lookup = {cid: i for i, cid in enumerate(self.customer_ids)}
        for i, customer in enumerate(self.customer_dicts):
            lookup.update({alias: i for alias in customer["ingest_aliases"]})
        metric_ids = tuple(self.metric_ids)
        return _Core(
            spec=self.spec,
            now=self.now,
            grid_start=self.grid_start,
            customers=self.customer_dicts,
            billable_metrics=self.metric_dicts,
            credit_types=[
                {"id": USD_CREDIT_TYPE_ID, "name": USD_CREDIT_TYPE["name"], "is_currency": True},
                {
                    "id": self.uid("credit_type", "compute_credits"),
                    "name": "Compute credits",
                    "is_currency": False,
                },
            ],
            contracts=self.contracts,
            invoices=self.invoices,
            balances=self.balances,
            profiles={cid: str(p) for cid, p in zip(self.customer_ids, self.labels, strict=True)},
            rhythms={cid: _RHYTHMS[r] for cid, r in zip(self.customer_ids, self.rhythm, strict=True)},
            churn_days={
                self.customer_ids[i]: int(self.churn_day[i]) - self.anchor_day
                for i in np.flatnonzero(self.churn_day < _NEVER)
            },
            precursor_days={
                self.customer_ids[i]: int(self.precursor_length[i])
                for i in np.flatnonzero(self.precursor_length)
            },
            dips={
                self.customer_ids[i]: (
                    int(self.dip_start[i]) - self.anchor_day,
                    int(self.dip_start[i] + self.dip_length[i]) - self.anchor_day,
                )
                for i in np.flatnonzero(self.dip_length)
            },
            contacts=contacts,
            hourly=self.hourly,
            daily=self.daily,
            created_s=self.created_s,
            customer_ids=tuple(self.customer_ids),
            customer_id_set=frozenset(self.customer_ids),
            customer_lookup=lookup,
            customer_order=np.array(sorted(range(self.n), key=self.customer_ids.__getitem__), dtype=np.int64),
            metric_ids=metric_ids,
            metric_names=tuple(m.name for m in self.metrics),
            metric_lookup={mid: i for i, mid in enumerate(metric_ids)},
            metric_order=np.array(sorted(range(len(metric_ids)), key=metric_ids.__getitem__), dtype=np.int64),
            archived_metric_ids=frozenset({self.archived_metric_id}),
            event_metrics=self.event_metrics,
        )

    # --- catalogue -------------------------------------------------------------------------------------------

    def _products(self) -> None:
        self.usage_products = [
            {"id": self.uid("product", m.name), "name": m.product_name} for m in self.metrics
        ]
        self.commit_product = {"id": self.uid("product", "prepaid_commit"), "name": "Prepaid commit"}
        self.credit_product = {"id": self.uid("product", "promotional_credit"), "name": "Promotional credit"}

    def _billable_metrics(self) -> None:
        def wire(metric: _Metric, index: int, archived_at: str | None) -> dict:
            body = {
                "id": self.uid("billable_metric", index),
                "name": metric.name,
                "aggregation_type": metric.aggregation_type,
                "event_type_filter": {"in_values": [metric.event_type]},
                "property_filters": [],
                "group_keys": [],
                "custom_fields": {},
                "archived_at": archived_at,
            }
            if metric.aggregation_key:
                body["aggregation_key"] = metric.aggregation_key
                body["property_filters"] = [{"name": metric.aggregation_key, "exists": True}]
            return body

        self.metric_dicts = [wire(m, i, None) for i, m in enumerate(self.metrics)]
        archived = wire(_ARCHIVED_METRIC, len(_METRICS), format_timestamp(self.anchor_s - 200 * _DAY))
        self.metric_dicts.append(archived)
        self.metric_ids = [m["id"] for m in self.metric_dicts[: len(self.metrics)]]
        self.archived_metric_id = archived["id"]
        event_metrics: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
        for i, metric in enumerate(self.metrics):
            event_metrics[metric.event_type].append((i, metric.aggregation_key))
        self.event_metrics = {k: tuple(v) for k, v in event_metrics.items()}

    # --- customers -------------------------------------------------------------------------------------------

    def _customers(self) -> None:
        n, rng = self.n, self.rng(_STREAM_CUSTOMERS)
        counts = {
            p: max(_PROFILE_MINIMUM.get(p, 1), round(share * n)) for p, share in _PROFILE_SHARES.items()
        }
        counts["steady"] = n - sum(counts.values())
        labels = np.array([p for p in PROFILES for _ in range(counts.get(p, 0))])[rng.permutation(n)]
        labels = self._draw_churners(labels)
        rank = np.zeros(
            n, dtype=np.int64
        )  # position within its profile, to spread variants deterministically
        for profile in PROFILES:
            members = np.flatnonzero(labels == profile)
            rank[members] = np.arange(len(members))
        self.labels, self.rank = labels, rank

        def where(profile: str) -> np.ndarray:
            return labels == profile

        history = self.spec.history_days
        age_days = rng.integers(150, 900, n)
        second_of_day = rng.integers(60, _DAY - 60, n)
        mid_history = where("steady") & (rank % 8 == 3) & (history - 5 > 25)
        age_days[mid_history] = rng.integers(25, max(26, history - 5), n)[mid_history]

        lapse_days = np.full(n, -1)
        draws = rng.random(n)
        lapsed = where("lapsed")
        bucket = rank % 7
        # Recent (20-34 days: last use within a week before, whatever the rhythm), before the history (130-200)
        # and spread over the history (45-114), so churn events fall on many days a model trains on.
        lapse_days[lapsed & (bucket == 0)] = 20 + (draws * 15).astype(int)[lapsed & (bucket == 0)]
        lapse_days[lapsed & (bucket == 1)] = 130 + (draws * 71).astype(int)[lapsed & (bucket == 1)]
        regular = lapsed & (bucket > 1)
        lapse_days[regular] = 45 + (draws * 70).astype(int)[regular]
        age_days[lapsed] = lapse_days[lapsed] + rng.integers(60, 400, n)[lapsed]

        archived_s = np.full(n, -1, dtype=np.int64)
        archived = where("archived")
        archived_age = rng.integers(5, 91, n)
        archived_s[archived] = (self.anchor_s - archived_age * _DAY + second_of_day)[archived]
        age_days[archived] = archived_age[archived] + rng.integers(60, 600, n)[archived]
        age_days[where("renewed_recently")] = rng.integers(380, 900, n)[where("renewed_recently")]

        created_s = self.anchor_s - age_days * _DAY + second_of_day
        new = where("new")
        created_s[new] = self.anchor_s - rng.integers(_DAY, 19 * _DAY, n)[new]

        decline = np.ones(n)
        deep = where("declining") & (rank % 2 == 0)
        shallow = where("declining") & (rank % 2 == 1)
        decline[deep] = rng.uniform(0.10, 0.25, n)[deep]
        decline[shallow] = rng.uniform(0.35, 0.50, n)[shallow]  # margin below 55% for the noise
        # Most renewals due within a week come with fading activity (the "save the renewal" pattern): a third go
        # silent for the last week, a third drop by 40–70%, a third stay steady.
        renewing = where("renewal_7d")
        decline[renewing & (rank % 3 == 0)] = 0.0
        decline[renewing & (rank % 3 == 1)] = rng.uniform(0.30, 0.60, n)[renewing & (rank % 3 == 1)]

        self.created_s = created_s.astype(np.int64)
        self.archived_s = archived_s
        self.lapse_days = lapse_days
        self.decline = decline
        self.customer_ids = [self.uid("customer", i) for i in range(n)]
        self._customer_dicts(rng)

    def _draw_churners(self, labels: np.ndarray) -> np.ndarray:
        """Draw latent traits, then let a hazard on them pick which customers of the churn pool churn.

        Engagement (standard normal) sets usage volume and, with noise, the rhythm: the less engaged get the
        sparser rhythms. Each pool customer's time to churn is exponential with rate
        exp(-a * engagement + b * (1 - active share of its rhythm)); the first to churn, as many as the lapsed,
        archived and churning profiles need, get those profiles in random order. So low volume and long gaps
        raise the odds of churning, and the features can see both, but they decide nothing on their own.
        """
        n = self.n
        rng = self.churn_rng = self.rng(_STREAM_CHURN)
        self.engagement = rng.standard_normal(n)
        sparsity = -0.6 * self.engagement + 0.8 * rng.standard_normal(n)
        position = (np.argsort(np.argsort(sparsity, kind="stable"), kind="stable") + 0.5) / n
        rhythm = np.searchsorted(np.cumsum(_RHYTHM_SHARES), position)
        hazard = np.exp(
            -_HAZARD_ENGAGEMENT * self.engagement + _HAZARD_SPARSITY * (1 - _RHYTHM_ACTIVE_SHARE[rhythm])
        )
        time_to_churn = rng.exponential(size=n) / hazard
        pool = np.flatnonzero(np.isin(labels, _CHURN_POOL))
        churning = min(max(2, round(_CHURNING_SHARE * n)), int((labels == "steady").sum()) // 2)
        roles = np.repeat(
            ["lapsed", "archived", "churning"],
            [(labels == "lapsed").sum(), (labels == "archived").sum(), churning],
        )
        first = pool[np.argsort(time_to_churn[pool], kind="stable")[: len(roles)]]
        labels = labels.astype(f"<U{max(len(p) for p in PROFILES)}")
        labels[pool] = "steady"
        labels[first] = roles[rng.permutation(len(roles))]
        rhythm[np.isin(labels, _DENSE_RHYTHM_PROFILES) & (rhythm > _WORKDAYS)] = _WORKDAYS
        self.rhythm = rhythm
        return labels

    def _customer_dicts(self, rng: np.random.Generator) -> None:
        n = self.n
        words = rng.integers(0, len(_COMPANY_WORDS), n)
        nouns = rng.integers(0, len(_COMPANY_NOUNS), n)
        suffixes = rng.integers(0, len(_COMPANY_SUFFIXES), n)
        segments = rng.choice(["startup", "growth", "enterprise"], n, p=[0.5, 0.35, 0.15])
        salesforce = rng.random(n) < 0.6
        update_lag = rng.random(n)
        active = self.archived_s < 0
        do_not_retarget = np.zeros(n, dtype=bool)
        do_not_retarget[rng.permutation(np.flatnonzero(active))[: max(2, n // 30)]] = True
        two_aliases = np.zeros(n, dtype=bool)
        two_aliases[rng.permutation(n)[: max(2, n // 30)]] = True

        seen_names: dict[str, int] = {}
        self.customer_dicts, self.domains = [], []
        for i in range(n):
            base = " ".join(
                part
                for part in (
                    _COMPANY_WORDS[words[i]],
                    _COMPANY_NOUNS[nouns[i]],
                    _COMPANY_SUFFIXES[suffixes[i]],
                )
                if part
            )
            seen_names[base] = seen_names.get(base, 0) + 1
            name = base if seen_names[base] == 1 else f"{base} {seen_names[base]}"
            domain = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".example"
            self.domains.append(domain)
            aliases = [f"org-{self.spec.seed}-{i:06d}"]
            if two_aliases[i]:
                aliases.append(f"billing@{domain}")
            custom_fields = {"segment": str(segments[i])}
            if do_not_retarget[i]:
                custom_fields["do_not_retarget"] = "true"
            created = int(self.created_s[i])
            archived_at = int(self.archived_s[i]) if self.archived_s[i] >= 0 else None
            last_touch = archived_at or created + int(update_lag[i] * (self.now_s - created))
            customer = {
                "id": self.customer_ids[i],
                "external_id": aliases[0],
                "ingest_aliases": aliases,
                "name": name,
                "custom_fields": custom_fields,
                "customer_config": (
                    {"salesforce_account_id": self.provider_id("001", "salesforce", str(i))[:18].upper()}
                    if salesforce[i]
                    else {}
                ),
                "created_at": format_timestamp(created),
                "updated_at": format_timestamp(max(created, last_touch)),
                "archived_at": format_timestamp(archived_at) if archived_at else None,
                "current_billable_status": (
                    {"value": "unbillable", "effective_at": format_timestamp(archived_at)}
                    if archived_at
                    else {"value": "billable"}
                ),
            }
            self.customer_dicts.append(customer)

    # --- usage -----------------------------------------------------------------------------------------------

    def _activity(self) -> np.ndarray:
        """Per customer and day: 0 on a day without use, else a volume factor (1, or less in a fade or a dip).

        A rhythm schedules the days of use. Most churners of the history, and every churning customer, fade
        before their churn day: over 2-6 weeks usage falls to 10-50% and more and more scheduled days are skipped
        (gaps lengthen); the last scheduled day before the churn day is always used. Some non-churners get one
        1-3 week dip (usage down 30-60%, some days skipped) and recover, so a drop alone never proves churn.
        """
        n, n_days, rng = self.n, self.n_days, self.churn_rng
        days = np.arange(n_days)
        offset = np.where(self.rhythm == _WORKDAYS, 0, rng.integers(0, 7, n))
        weekday = (days + self.grid_start.weekday()) % 7
        scheduled = _RHYTHM_DAYS[self.rhythm[:, None], (weekday[None, :] - offset[:, None]) % 7]
        alternate = self.rhythm == _EVERY_OTHER_DAY
        scheduled[alternate] = (days[None, :] + offset[alternate, None]) % 2 == 0

        churn_day = np.full(n, _NEVER, dtype=np.int64)
        lapsed, archived = self.lapse_days >= 0, self.archived_s >= 0
        churn_day[lapsed] = self.anchor_day - self.lapse_days[lapsed]
        churn_day[archived] = (self.archived_s[archived] - self.grid_start_s) // _DAY
        length = rng.integers(_PRECURSOR_DAYS[0], _PRECURSOR_DAYS[1] + 1, n)
        floor = rng.uniform(*_PRECURSOR_FLOOR, n)
        slowdown = rng.uniform(*_PRECURSOR_SKIP, n)
        fades = (rng.random(n) < _PRECURSOR_SHARE) & (lapsed | archived)
        churning = self.labels == "churning"
        progress = rng.uniform(0.5, 0.95, n)  # how far into its fade a churning customer is today
        churn_day[churning] = self.anchor_day + np.ceil((1 - progress) * length).astype(np.int64)[churning]
        fades |= churning
        dipping = (rng.random(n) < _DIP_SHARE) & np.isin(self.labels, _DIP_PROFILES)
        dip_length = rng.integers(_DIP_DAYS[0], _DIP_DAYS[1] + 1, n)
        dip_start = rng.integers(0, n_days, n)
        dip_depth = rng.uniform(*_DIP_DEPTH, n)
        dip_skip = rng.uniform(*_DIP_SKIP, n)
        draw = rng.random((n, n_days), dtype=np.float32)

        progress_by_day = (days[None, :] - (churn_day - length)[:, None] + 1) / length[:, None]
        fading = fades[:, None] & (progress_by_day > 0) & (days[None, :] < churn_day[:, None])
        volume = np.where(fading, 1 - (1 - floor[:, None]) * progress_by_day, 1.0).astype(np.float32)
        skip = np.where(fading, slowdown[:, None] * progress_by_day, 0.0).astype(np.float32)
        in_dip = dipping[:, None] & (days[None, :] >= dip_start[:, None])
        in_dip &= days[None, :] < (dip_start + dip_length)[:, None]
        volume[in_dip] *= np.broadcast_to(dip_depth[:, None], in_dip.shape)[in_dip]
        skip[in_dip] = np.broadcast_to(dip_skip[:, None], in_dip.shape)[in_dip]
        before_churn = scheduled & (days[None, :] < churn_day[:, None])
        has_last = (churn_day < _NEVER) & before_churn.any(axis=1)
        last = n_days - 1 - np.argmax(before_churn[:, ::-1], axis=1)
        skip[has_last, last[has_last]] = 0.0

        self.churn_day = churn_day
        self.precursor_length = np.where(fades, length, 0)
        self.dip_start = dip_start
        self.dip_length = np.where(dipping, dip_length, 0)
        return np.where(scheduled & (draw >= skip), volume, np.float32(0.0))

    def _usage(self) -> None:
        """Hourly usage = rate x diurnal x weekday x profile-per-day x activity x noise, as whole units, chunked."""
        n, m, n_days = self.n, len(self.metrics), self.n_days
        n_hours = 24 * n_days
        activity = self._activity()
        rng = self.rng(_STREAM_USAGE)
        # Engagement shares the usage stream's draw without changing its spread: log volume stays N(log 25, 1).
        volume = rng.normal(0.0, 1.0, n)
        mix = _ENGAGEMENT_VOLUME * self.engagement + math.sqrt(1 - _ENGAGEMENT_VOLUME**2) * volume
        calls = np.exp(math.log(25) + mix).clip(0.2, 3000)
        signal = np.isin(
            self.labels, ["credits_low", "failed_payment", "failed_then_paid", "declining", "renewal_7d"]
        )
        # A ratio or a money signal needs volume to stay clear of rounding noise.
        calls[signal] = np.maximum(calls[signal], 20.0)
        rates = np.stack(
            [
                calls,
                calls * np.exp(rng.normal(math.log(350), 0.4, n)),
                calls * np.exp(rng.normal(math.log(1.2), 0.5, n)),
            ],
            axis=1,
        )[:, :m].astype(np.float32)
        peak = rng.integers(0, 24, n)
        hour_of_day = np.arange(24)
        diurnal = 0.25 + 0.75 * (0.5 + 0.5 * np.cos(2 * np.pi * (hour_of_day[None, :] - peak[:, None]) / 24))
        weekend = (np.arange(n_days) + self.grid_start.weekday()) % 7 >= 5
        weekday_factor = np.where(weekend[None, :], rng.uniform(0.3, 0.9, n)[:, None], 1.0)
        weekday_factor[self.rhythm != _DAILY] = 1.0  # a schedule already picks its days

        relative_day = np.arange(n_days) - self.anchor_day
        trend = 1 + rng.uniform(-0.1, 0.15, n)[:, None] * relative_day[None, :] / self.spec.history_days
        day_factor = trend * np.exp(rng.normal(0, 0.08, (n, n_days)))
        day_factor[:, relative_day >= -7] *= self.decline[:, None]
        day_factor *= weekday_factor
        day_factor *= activity

        stop_s = np.full(n, self.now_s, dtype=np.int64)
        lapsed = self.lapse_days >= 0
        stop_s[lapsed] = self.anchor_s - self.lapse_days[lapsed] * _DAY
        stop_s[self.archived_s >= 0] = self.archived_s[self.archived_s >= 0]
        first_hour = np.clip(
            -((self.grid_start_s - self.created_s) // _HOUR), 0, n_hours
        )  # first hour starting >= created_at
        stop_hour = np.clip((stop_s - self.grid_start_s) // _HOUR, 0, min(n_hours, self.visible_hours))
        hours = np.arange(n_hours)

        self.hourly = np.zeros((n, m, n_hours), dtype=np.uint32)
        for lo in range(0, n, 256):
            hi = min(lo + 256, n)
            shape = diurnal[lo:hi][:, hours % 24] * np.repeat(day_factor[lo:hi], 24, axis=1)
            shape *= (hours >= first_hour[lo:hi, None]) & (hours < stop_hour[lo:hi, None])
            noise = rng.standard_normal((hi - lo, m, n_hours), dtype=np.float32)
            noise *= 0.35
            np.exp(noise, out=noise)
            noise *= rates[lo:hi, :, None]
            noise *= shape[:, None, :].astype(np.float32)
            noise += rng.random((hi - lo, m, n_hours), dtype=np.float32)  # unbiased rounding: floor(x + U)
            np.floor(noise, out=noise)
            self.hourly[lo:hi] = noise
        self.daily = self.hourly.reshape(n, m, n_days, 24).sum(axis=3, dtype=np.float64)
        self.day_cost = np.round((self.daily * self.prices[None, :, None]).sum(axis=1), 2)

    # --- contracts -------------------------------------------------------------------------------------------

    def _contracts(self) -> None:
        """Per customer, a chain of annual terms ending in the current one, shaped by the profile."""
        n, rng = self.n, self.rng(_STREAM_CONTRACTS)
        draws = rng.random((n, 6))
        tiers = rng.choice(["starter", "growth", "scale"], n, p=[0.5, 0.35, 0.15])
        anchor = self.anchor
        self.contracts: dict[str, list[dict]] = {}
        self.current_contract: list[dict | None] = []
        self.contract_terms: list[list[tuple[dict, datetime, datetime | None]]] = []
        for i in range(n):
            profile, d = self.labels[i], draws[i]
            created = datetime.fromtimestamp(int(self.created_s[i]), UTC)
            created_day = created.replace(hour=0, minute=0, second=0)
            evergreen_share = {"lapsed": 1 / 3, "new": 0.4}.get(profile, 0.0)
            if profile in (
                "steady",
                "churning",
                "declining",
                "credits_low",
                "failed_payment",
                "failed_then_paid",
            ):
                evergreen_share = 0.3
            start: datetime
            end: datetime | None
            if profile == "renewed_recently":
                start = anchor - timedelta(days=1 + int(d[1] * 13))
                end = start + timedelta(days=365)
            elif profile in ("renewal_7d", "renewal_30d"):
                low, high = (1, 7) if profile == "renewal_7d" else (8, 30)
                end = anchor + timedelta(days=low + int(d[1] * (high - low + 1)))
                start = max(created_day, end - timedelta(days=365))
            elif profile == "archived":
                end = datetime.fromtimestamp(int(self.archived_s[i]), UTC).replace(hour=0, minute=0, second=0)
                end += timedelta(days=1)
                start = max(created_day, end - timedelta(days=365))
            elif profile == "lapsed" and d[0] >= 2 / 3:  # the contract ran out some days after usage stopped
                end = min(
                    anchor - timedelta(days=int(self.lapse_days[i]) - 1 - int(d[1] * 30)),
                    anchor - timedelta(days=1),
                )
                start = max(created_day, end - timedelta(days=365))
            elif d[0] < evergreen_share:
                start, end = created_day, None
            elif profile == "new":
                start, end = created_day, created_day + timedelta(days=365)
            else:
                end = anchor + timedelta(days=31 + int(d[1] * 300))
                start = max(created_day, end - timedelta(days=365))
            terms = self._chain(created_day, start, end)
            customer_id = self.customer_ids[i]
            built = []
            for k, (term_start, term_end) in enumerate(terms):
                contract = self._contract_dict(i, k, term_start, term_end, str(tiers[i]), d[2])
                built.append((contract, term_start, term_end))
            for (older, _, _), (newer, _, _) in zip(built, built[1:], strict=False):
                transition = {
                    "from_contract_id": older["id"],
                    "to_contract_id": newer["id"],
                    "type": "RENEWAL",
                }
                older["transitions"].append(transition)
                newer["transitions"].append(dict(transition))
            contracts = [c for c, _, _ in built]
            if d[3] < 0.04 and profile != "new" and created < anchor - timedelta(days=60):
                contracts.append(self._archived_contract(i, created_day + timedelta(days=1 + int(d[4] * 20))))
            contracts.sort(key=lambda c: (c["starting_at"], c["id"]))
            self.contracts[customer_id] = contracts
            self.contract_terms.append(built)
            current = [c for c, s, e in built if s <= self.now and (e is None or self.now < e)]
            self.current_contract.append(current[0] if current else None)

    @staticmethod
    def _chain(
        created_day: datetime, start: datetime, end: datetime | None
    ) -> list[tuple[datetime, datetime | None]]:
        """Earlier annual terms back to the customer's creation; a stub under 120 days joins its successor."""
        terms: list[tuple[datetime, datetime | None]] = [(start, end)]
        stub = timedelta(days=120)
        while terms[0][0] > created_day:
            first_start, first_end = terms[0]
            if first_start - created_day < stub:
                terms[0] = (created_day, first_end)
                break
            previous_start = first_start - timedelta(days=365)
            if previous_start - created_day < stub:
                previous_start = created_day
            terms.insert(0, (previous_start, first_start))
        return terms

    def _contract_dict(
        self, i: int, k: int | str, start: datetime, end: datetime | None, tier: str, draw: float
    ) -> dict:
        created_at = max(
            int(self.created_s[i]) + 60, int(start.timestamp()) - _DAY * (1 + int(draw * 14)) + 3600 * 9
        )
        contract = {
            "id": self.uid("contract", i, k),
            "customer_id": self.customer_ids[i],
            "created_at": format_timestamp(min(created_at, self.now_s)),
            "created_by": _CREATED_BY,
            "starting_at": format_timestamp(start),
            "name": f"{tier.title()} {'evergreen' if end is None else 'annual'} {start.year}",
            "rate_card_id": self.uid("rate_card", tier),
            "custom_fields": {"plan_tier": tier},
            "commits": [],
            "credits": [],
            "overrides": [],
            "scheduled_charges": [],
            "transitions": [],
            "usage_filter": [],
            "usage_statement_schedule": {
                "billing_anchor_date": format_timestamp(start),
                "frequency": "MONTHLY",
            },
            "has_more": {"commits": False, "credits": False},
            "net_payment_terms_days": 30,
        }
        if end is not None:
            contract["ending_before"] = format_timestamp(end)
        return contract

    def _archived_contract(self, i: int, start: datetime) -> dict:
        """A contract created by mistake and archived: only visible with include_archived."""
        contract = self._contract_dict(i, "archived", start, start + timedelta(days=30), "starter", 0.0)
        contract["name"] = "Duplicate draft (archived)"
        contract["archived_at"] = format_timestamp(start + timedelta(days=2))
        return contract

    # --- invoices --------------------------------------------------------------------------------------------

    def _invoices(self) -> None:
        """Monthly USAGE invoices from each contract's billing anchor: FINALIZED once ended, DRAFT for the current."""
        self.invoices: dict[str, list[dict]] = {}
        self.invoice_days: list[
            list[tuple[int, int, dict]]
        ] = []  # per customer: (first day, end day, invoice)
        for i in range(self.n):
            customer_invoices, spans = [], []
            for contract, start, end in self.contract_terms[i]:
                # Skip whole months that end before the grid; one month of slack covers short months.
                period = max(
                    0, 12 * (self.grid_start.year - start.year) + self.grid_start.month - start.month - 1
                )
                period_start = _add_months(start, period)
                while period_start < self.now and (end is None or period_start < end):
                    period_end = _add_months(start, period + 1)
                    if end is not None:
                        period_end = min(period_end, end)
                    if period_end > self.grid_start:
                        invoice = self._invoice_dict(i, contract["id"], period, period_start, period_end)
                        customer_invoices.append(invoice)
                        spans.append((self.day_index(period_start), self.day_index(period_end), invoice))
                    period += 1
                    period_start = period_end
            self.invoices[self.customer_ids[i]] = customer_invoices
            self.invoice_days.append(spans)

    def _invoice_dict(self, i: int, contract_id: str, period: int, start: datetime, end: datetime) -> dict:
        first = min(max(self.day_index(start), 0), self.n_days)
        last = min(max(self.day_index(end), 0), self.n_days)
        quantities = self.daily[i, :, first:last].sum(axis=1)
        starting_at, ending_before = format_timestamp(start), format_timestamp(end)
        line_items = [
            {
                "name": product["name"],
                "total": round(float(quantity) * metric.unit_price, 2),
                "type": "usage",
                "credit_type": dict(USD_CREDIT_TYPE),
                "quantity": float(quantity),
                "unit_price": metric.unit_price,
                "product_id": product["id"],
                "starting_at": starting_at,
                "ending_before": ending_before,
            }
            for metric, product, quantity in zip(self.metrics, self.usage_products, quantities, strict=True)
        ]
        subtotal = round(sum(line["total"] for line in line_items), 2)
        return {
            "id": self.uid("invoice", contract_id, period),
            "customer_id": self.customer_ids[i],
            "contract_id": contract_id,
            "status": "FINALIZED" if end <= self.now else "DRAFT",
            "type": "USAGE",
            "credit_type": dict(USD_CREDIT_TYPE),
            "line_items": line_items,
            "subtotal": subtotal,
            "total": subtotal,
            "start_timestamp": starting_at,
            "end_timestamp": ending_before,
            "issued_at": ending_before,
            "billable_status": "billable",
            "net_payment_terms_days": 30,
            "custom_fields": {},
            "invoice_adjustments": [],
        }

    # --- balances --------------------------------------------------------------------------------------------

    def _balances(self) -> None:
        """Prepaid commits and credits whose ledgers draw down, day by day, the cost each invoice bills."""
        n, rng = self.n, self.rng(_STREAM_BALANCES)
        draws = rng.random((n, 10))
        self.applied: dict[str, list[tuple[dict, float]]] = defaultdict(list)  # invoice id -> (item, amount)
        self._billing_cache: dict[tuple[int, str | None], list[dict | None]] = {}
        self.balances: dict[str, list[dict]] = {}
        holders = {
            "steady",
            "churning",
            "declining",
            "renewal_7d",
            "renewal_30d",
            "renewed_recently",
            "lapsed",
        }
        for i in range(n):
            profile, d, current = self.labels[i], draws[i], self.current_contract[i]
            created_day = -(
                (self.grid_start_s - int(self.created_s[i])) // _DAY
            )  # first whole day after creation
            items: list[dict] = []
            if profile == "credits_low" or (profile in holders and current is not None and d[0] < 0.35):
                items.extend(self._primary_balance(i, d, current, created_day))
            elif profile == "new" and d[0] < 0.5:
                start = max(created_day - 1, 0)
                cost, burn = self._billed_cost(i, start, self.anchor_day, None), self._burn(i, None)
                amount = _ceil_cents(max(50_000.0, cost + 60 * burn))
                items.append(
                    self._balance_item(i, "CREDIT", "Starter credit", [(start, start + 90, amount)], None, 0)
                )
            items.sort(key=lambda item: (item["created_at"], item["id"]))
            self.balances[self.customer_ids[i]] = items
            for item in items:
                if "contract" in item:
                    contract = next(
                        c for c in self.contracts[self.customer_ids[i]] if c["id"] == item["contract"]["id"]
                    )
                    key = "commits" if item["type"] == "PREPAID" else "credits"
                    contract[key].append({k: v for k, v in item.items() if k not in ("balance", "ledger")})

    def _primary_balance(self, i: int, d: np.ndarray, current: dict | None, created_day: int) -> list[dict]:
        profile = self.labels[i]
        kind = "PREPAID" if d[1] < (0.7 if profile == "credits_low" else 0.6) else "CREDIT"
        contract = current if current is not None and d[2] < 0.85 else None
        if profile == "credits_low" and self.rank[i] % 2 == 0:
            start = self.anchor_day - 20 - int(d[3] * 25)
        elif profile == "credits_low":
            start = self.anchor_day - 10 - int(d[3] * 15)
        else:
            start = self.anchor_day - 30 - int(d[3] * 30)
        floor = max(0, created_day)
        if contract is not None:
            floor = max(floor, self.day_index(datetime.fromisoformat(contract["starting_at"])))
        start = max(start, floor)
        length = (365 if d[4] < 0.6 else 90) if kind == "PREPAID" else (90 if d[4] < 0.5 else 180)
        end = start + length
        contract_end = self._contract_end_day(contract)
        if contract_end is not None:
            end = min(end, contract_end)
        contract_id = contract["id"] if contract is not None else None
        cost = self._billed_cost(i, start, self.anchor_day, contract_id)
        burn = self._burn(i, contract_id)
        if profile == "credits_low" and self.rank[i] % 2 == 0:
            amount = cost / (0.82 + d[5] * 0.13)  # 82-95% used
        elif profile == "credits_low":
            amount = cost + burn * (2 + d[5] * 4)  # runs out in 2-6 days at the current burn
        else:
            amount = max(cost / (0.1 + d[5] * 0.5), cost + 45 * burn, 10_000.0)
        amount = _ceil_cents(max(amount, 100.0))
        segments = [(start, end, amount)]
        if (
            kind == "PREPAID"
            and length == 90
            and d[6] < 0.5
            and (contract_end is None or end + 90 <= contract_end)
        ):
            segments.append((end, end + 90, amount))
        items = []
        if (
            d[7] < 0.3 and start - 14 > floor
        ):  # an older welcome credit that ran out or expired before this one
            welcome_start = max(start - 14 - int(d[8] * 16), floor)
            welcome = _ceil_cents(2000 + d[9] * 18_000)
            items.append(
                self._balance_item(i, "CREDIT", "Welcome credit", [(welcome_start, start, welcome)], None, 1)
            )
        name = "Prepaid commit" if kind == "PREPAID" else "Promotional credit"
        items.append(self._balance_item(i, kind, name, segments, contract_id, 2))
        return items

    def _contract_end_day(self, contract: dict | None) -> int | None:
        if contract is None or "ending_before" not in contract:
            return None
        return self.day_index(datetime.fromisoformat(contract["ending_before"]))

    def _billing_invoices(self, i: int, contract_id: str | None) -> list[dict | None]:
        """For each complete day of the grid, the invoice that bills it (restricted to one contract if given)."""
        key = (i, contract_id)
        if key not in self._billing_cache:
            days: list[dict | None] = [None] * self.anchor_day
            for first, last, invoice in self.invoice_days[i]:
                if contract_id is None or invoice["contract_id"] == contract_id:
                    for day in range(max(first, 0), min(last, self.anchor_day)):
                        days[day] = days[day] or invoice
            self._billing_cache[key] = days
        return self._billing_cache[key]

    def _billed_cost(self, i: int, first: int, last: int, contract_id: str | None) -> float:
        invoices = self._billing_invoices(i, contract_id)
        days = range(max(first, 0), min(last, self.anchor_day))
        return float(sum(self.day_cost[i, day] for day in days if invoices[day] is not None))

    def _burn(self, i: int, contract_id: str | None) -> float:
        return self._billed_cost(i, self.anchor_day - 7, self.anchor_day, contract_id) / 7

    def _balance_item(
        self,
        i: int,
        kind: str,
        name: str,
        segments: list[tuple[int, int, float]],
        contract_id: str | None,
        ordinal: int,
    ) -> dict:
        prefix = "PREPAID_COMMIT" if kind == "PREPAID" else "CREDIT"
        item_id = self.uid("balance", i, ordinal)
        item = {
            "id": item_id,
            "type": kind,
            "name": name,
            "product": dict(self.commit_product if kind == "PREPAID" else self.credit_product),
            "created_at": format_timestamp(
                max(
                    int(self.created_s[i]) + 120,
                    self.grid_start_s + (segments[0][0] - 1) * _DAY + 3600 * (8 + ordinal),
                )
            ),
            "priority": 1 if kind == "CREDIT" else 2,
            "rate_type": "COMMIT_RATE" if kind == "PREPAID" else "LIST_RATE",
            "access_schedule": {
                "credit_type": dict(USD_CREDIT_TYPE),
                "schedule_items": [],
            },
            "custom_fields": {},
        }
        if contract_id is not None:
            item["contract"] = {"id": contract_id}
        ledger, balance = [], 0.0
        for k, (first, last, amount) in enumerate(segments):
            segment_id = self.uid("segment", item_id, k)
            item["access_schedule"]["schedule_items"].append(
                {
                    "id": segment_id,
                    "amount": amount,
                    "starting_at": self.day_ts(first),
                    "ending_before": self.day_ts(last),
                }
            )
            if first > self.anchor_day:
                continue  # a future segment has no ledger yet and contributes nothing to the balance
            ledger.append(
                {
                    "type": f"{prefix}_SEGMENT_START",
                    "amount": amount,
                    "timestamp": self.day_ts(first),
                    "segment_id": segment_id,
                }
            )
            remaining = amount
            invoices = self._billing_invoices(i, contract_id)
            for day in range(max(first, 0), min(last, self.anchor_day)):
                invoice = invoices[day]
                cost = float(self.day_cost[i, day])
                if invoice is None or cost <= 0 or remaining <= 0:
                    continue
                taken = round(min(cost, remaining), 2)
                remaining = round(remaining - taken, 2)
                ledger.append(
                    {
                        "type": f"{prefix}_AUTOMATED_INVOICE_DEDUCTION",
                        "amount": -taken,
                        "timestamp": self.day_ts(day + 1),
                        "segment_id": segment_id,
                        "invoice_id": invoice["id"],
                        "contract_id": invoice["contract_id"],
                    }
                )
                self.applied[invoice["id"]].append((item, taken))
            if last <= self.anchor_day and remaining > 0:
                ledger.append(
                    {
                        "type": f"{prefix}_EXPIRATION",
                        "amount": -remaining,
                        "timestamp": self.day_ts(last),
                        "segment_id": segment_id,
                    }
                )
                remaining = 0.0
            balance += remaining
        item["balance"] = round(max(balance, 0.0), 2)
        item["ledger"] = ledger
        return item

    # --- invoice totals and payment state --------------------------------------------------------------------

    def _settle_invoices(self) -> None:
        """Apply commit/credit drawdowns to totals, then give finalized invoices their Stripe payment state."""
        rng = self.rng(_STREAM_INVOICES)
        void_draws = rng.random(self.n)
        for i, customer_id in enumerate(self.customer_ids):
            invoices = self.invoices[customer_id]
            for invoice in invoices:
                applied: dict[str, tuple[dict, float]] = {}
                for item, amount in self.applied.get(invoice["id"], ()):
                    previous = applied.get(item["id"], (item, 0.0))[1]
                    applied[item["id"]] = (item, round(previous + amount, 2))
                for item, amount in applied.values():
                    invoice["line_items"].append(
                        {
                            "name": item["name"],
                            "total": -amount,
                            "type": "applied_commit_or_credit",
                            "credit_type": dict(USD_CREDIT_TYPE),
                            "quantity": 1.0,
                            "applied_commit_or_credit": {"id": item["id"], "type": item["type"]},
                        }
                    )
                invoice["total"] = round(
                    max(invoice["subtotal"] - sum(a for _, a in applied.values()), 0.0), 2
                )
                if invoice["status"] == "FINALIZED":
                    invoice["external_invoice"] = self._external_invoice(invoice, "PAID")
            finalized = sorted(
                (inv for inv in invoices if inv["status"] == "FINALIZED"),
                key=lambda inv: (inv["issued_at"], inv["id"]),
            )
            profile = self.labels[i]
            if profile == "failed_payment" and finalized:
                latest = finalized[-1]
                if self.rank[i] % 3 == 1:
                    latest["external_invoice"] = self._external_invoice(latest, "UNCOLLECTIBLE")
                else:
                    latest["external_invoice"] = self._external_invoice(latest, "PAYMENT_FAILED")
                    latest["external_invoice"]["billing_provider_error"] = "Your card was declined."
            elif profile == "failed_then_paid" and finalized:
                # Stripe keeps the last provider error after a retry succeeds; the status alone says PAID.
                finalized[-1]["external_invoice"]["billing_provider_error"] = "Your card was declined."
            elif profile == "steady" and len(finalized) >= 2 and void_draws[i] < 0.05:
                invoices.append(self._voided_copy(finalized[-2]))
            invoices.sort(key=lambda inv: (inv["issued_at"], inv["id"]))

    def _external_invoice(self, invoice: dict, status: str) -> dict:
        external = {
            "billing_provider_type": "stripe",
            "external_status": status,
            "invoice_id": self.provider_id("in_", "stripe_invoice", invoice["id"]),
            "issued_at_timestamp": invoice["issued_at"],
            "invoiced_total": invoice["total"],
        }
        if status == "PAID":
            external["external_payment_id"] = self.provider_id("pi_", "stripe_payment", invoice["id"])
        return external

    def _voided_copy(self, invoice: dict) -> dict:
        """The first issue of a period that was voided and reissued (the reissue is the FINALIZED one)."""
        voided = {**copy.deepcopy(invoice), "id": self.uid("voided_invoice", invoice["id"]), "status": "VOID"}
        voided["external_invoice"] = self._external_invoice(voided, "VOID")
        return voided

    # --- contacts --------------------------------------------------------------------------------------------

    def _contacts(self) -> pd.DataFrame:
        """CRM-style people per customer with the mess a real export has: case, spaces, bad phones, no consent."""
        rng = self.rng(_STREAM_CONTACTS)
        sizes = rng.choice([1, 2, 3, 4, 5], self.n, p=[0.42, 0.33, 0.17, 0.05, 0.03])
        total = int(sizes.sum()) + 2  # two people whose customer_id is not a tenant customer
        firsts = rng.integers(0, len(_FIRST_NAMES), total)
        lasts = rng.integers(0, len(_LAST_NAMES), total)
        email_kind = rng.random(total)
        phone_kind = rng.random(total)
        consent_kind = rng.random(total)
        area = rng.integers(0, len(_AREA_CODES), total)
        exchange = rng.integers(200, 1000, total)
        exchange = np.where((exchange % 100 == 11) | (exchange == 555), exchange + 1, exchange)
        line = rng.integers(0, 10_000, total)
        rows = []
        owners = [(self.customer_ids[i], self.domains[i]) for i in range(self.n) for _ in range(sizes[i])]
        owners += [(self.uid("unknown_customer", k), f"orphan-{k}.example") for k in range(2)]
        for p, (customer_id, domain) in enumerate(owners):
            first, last = _FIRST_NAMES[firsts[p]], _LAST_NAMES[lasts[p]]
            email = f"{first}.{last}@{domain}".lower()
            if email_kind[p] < 0.03:
                email = email.upper()
            elif email_kind[p] < 0.06:
                email = f"  {email} "
            elif email_kind[p] < 0.08:
                email = f"{first}.{last}.{domain}".lower()  # no @
            digits = f"{_AREA_CODES[area[p]]}{exchange[p]:03d}{line[p]:04d}"
            if phone_kind[p] < 0.74:
                phone = f"+1{digits}"
            elif phone_kind[p] < 0.84:
                phone = f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
            elif phone_kind[p] < 0.96:
                phone = ""
            else:
                phone = ("12", "not-a-phone")[p % 2]
            consent = "false" if consent_kind[p] < 0.15 else "" if consent_kind[p] < 0.18 else "true"
            rows.append((customer_id, self.uid("person", p), email, phone, consent))
        return pd.DataFrame(rows, columns=["customer_id", "person_id", "email", "phone", "marketing_consent"])
