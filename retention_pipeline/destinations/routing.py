"""destinations.yaml: which Customer.io segment, Meta audience and Google user list each segment syncs to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from retention_pipeline.config import ConfigError, env
from retention_pipeline.segments.project import Segment

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "destinations.yaml"


@dataclass(frozen=True)
class Routing:
    customerio_segments: dict[str, str] = field(default_factory=dict)
    meta_audiences: dict[str, str] = field(default_factory=dict)
    meta_min_audience_floor: int = 100
    google_operating_account: dict = field(default_factory=dict)
    google_user_lists: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def require(self, segment: Segment, destination: str) -> str:
        """The destination object id for a segment; a missing one fails naming the file and key."""
        table, key = {
            "meta": (self.meta_audiences, "meta.audiences"),
            "google": (self.google_user_lists, "google.user_lists"),
        }[destination]
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
