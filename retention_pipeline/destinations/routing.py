"""destinations.yaml: which Customer.io segment, Meta audience and Google user list each segment syncs to.

Meta audiences and Google user lists are required for every target segment routed there (the sync cannot send
without them), so `check_routing` fails definitions load when one is missing; Customer.io manual segments are
optional (attributes and events are sent either way).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from retention_pipeline.config import ConfigError, env
from retention_pipeline.segments.project import Segment

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "destinations.yaml"
# Destinations that cannot sync a segment without an object id in the file: Routing field and YAML key.
REQUIRED_IDS = {
    "meta": ("meta_audiences", "meta.audiences"),
    "google": ("google_user_lists", "google.user_lists"),
}
GOOGLE_ACCOUNT_FIELDS = ("accountType", "accountId")


@dataclass(frozen=True)
class Routing:
    customerio_segments: dict[str, str] = field(default_factory=dict)
    meta_audiences: dict[str, str] = field(default_factory=dict)
    meta_min_audience_floor: int = 100
    google_operating_account: dict = field(default_factory=dict)
    google_user_lists: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def file(self) -> str:
        """How messages name the file: `destinations.yaml`, or the path RETENTION_DESTINATIONS_CONFIG gave."""
        return DEFAULT_PATH.name if self.source == str(DEFAULT_PATH) else self.source

    def require(self, segment: Segment, destination: str) -> str:
        """The destination object id for a segment; a missing one fails naming the file and key."""
        attribute, key = REQUIRED_IDS[destination]
        table = getattr(self, attribute)
        if segment.name not in table:
            raise ConfigError(
                f"{self.source}: {key}.{segment.name} is missing, but segment {segment.name} lists {destination} "
                "as a destination (RETENTION_DESTINATIONS_CONFIG)."
            )
        return table[segment.name]


def load_routing(override: str | None = None) -> Routing:
    raw = env("RETENTION_DESTINATIONS_CONFIG", override)
    path = Path(raw).expanduser() if raw else DEFAULT_PATH
    if not path.is_file():
        raise ConfigError(f"RETENTION_DESTINATIONS_CONFIG={str(path)!r} does not name a readable file.")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"RETENTION_DESTINATIONS_CONFIG={str(path)!r} is not valid YAML: {exc}") from None

    def mapping(section: str, key: str) -> dict[str, str]:
        value = (spec.get(section) or {}).get(key) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {section}.{key} must map segment names to ids")
        return {str(k): str(v) for k, v in value.items()}

    floor = (spec.get("meta") or {}).get("min_audience_floor", 100)
    if not isinstance(floor, int) or floor < 0:
        raise ConfigError(f"{path}: meta.min_audience_floor must be a non-negative integer")
    return Routing(
        customerio_segments=mapping("customerio", "manual_segments"),
        meta_audiences=mapping("meta", "audiences"),
        meta_min_audience_floor=floor,
        google_operating_account=dict((spec.get("google") or {}).get("operating_account") or {}),
        google_user_lists=mapping("google", "user_lists"),
        source=str(path),
    )


def routing_problems(segments: list[Segment], routing: Routing) -> list[str]:
    """Every target segment routed to a destination whose id is missing from the routing file, as
    `segments/<file>:<line of destinations:>: …`. The one place that decides which entries are required."""
    problems = []
    for segment in (s for s in segments if s.purpose == "target"):
        where = segment.at(header_field="destinations")
        for destination in segment.destinations:
            if destination == "google" and not all(
                routing.google_operating_account.get(f) for f in GOOGLE_ACCOUNT_FIELDS
            ):
                problems.append(
                    f"{where}: routed to google but {routing.file} has no google.operating_account "
                    f"{{{', '.join(GOOGLE_ACCOUNT_FIELDS)}}}"
                )
            if destination not in REQUIRED_IDS:
                continue
            attribute, key = REQUIRED_IDS[destination]
            table = getattr(routing, attribute)
            if segment.name in table:
                continue
            known = sorted(table)
            nearest = difflib.get_close_matches(segment.name, known, n=1, cutoff=0.6)
            problems.append(
                f"{where}: routed to {destination} but {routing.file} has no {key}.{segment.name} "
                f"(known: {', '.join(known) or 'none'})"
                + (f'; is "{nearest[0]}" meant to be {segment.name}?' if nearest else "")
            )
    return problems


def check_routing(segments: list[Segment], routing: Routing | None = None) -> None:
    """Definitions load fails (ConfigError) when a segment is routed somewhere its id is missing, instead of the
    sync aborting after other destinations were already sent."""
    problems = routing_problems(segments, routing or load_routing())
    if problems:
        raise ConfigError("\n".join(problems))
