"""destinations.yaml: where each segment goes in each destination, the vendor-visible names, and lookalikes.

The file has one section per destination (its registry name), holding `<objects_key>: {segment: id}` (the
registry's key: audiences, user_lists, manual_segments, customer_lists…) and that vendor's own settings, plus two
shared sections:

- `names: {segment: "Neutral name"}` — what vendors see. Segment names say *why* someone is in an audience
  (failed_payment_active), and ad platforms restrict audiences whose names suggest financial or health status, so a
  vendor never sees a segment name: the default is `retention audience <8 hex>` (stable per segment), and a
  configured name containing a sensitive word fails at load.
- `<destination>.lookalikes: {segment: {...vendor spec}}` — a lookalike seeded by the segment's audience.

A destination that cannot create objects through its API needs an id for every target segment routed there, so
`check_routing` fails definitions load naming the segment file and line when one is missing; the others create the
object on the first sync and record it in `sync.destination_objects`.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from retention_pipeline.config import ConfigError, env
from retention_pipeline.destinations import registry
from retention_pipeline.segments.project import Segment

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "destinations.yaml"
SHARED_SECTIONS = ("names",)
# Words that make a vendor-visible audience name describe a person's financial or health situation.
SENSITIVE_WORDS = (
    "payment", "failed", "debt", "credit", "overdue", "churn", "lapsed", "winback", "health", "medical",
    "loan", "bankrupt", "arrears", "unpaid", "default", "risk",
)  # fmt: skip
_SENSITIVE = re.compile(r"(?i)(" + "|".join(SENSITIVE_WORDS) + r")")


def default_name(segment: str) -> str:
    """A neutral, stable vendor-visible name for a segment."""
    return f"retention audience {hashlib.sha256(segment.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Routing:
    sections: dict[str, dict] = field(default_factory=dict)  # destination → its section of the file
    names: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def file(self) -> str:
        """How messages name the file: `destinations.yaml`, or the path RETENTION_DESTINATIONS_CONFIG gave."""
        return DEFAULT_PATH.name if self.source == str(DEFAULT_PATH) else self.source

    def section(self, destination: str) -> dict:
        return dict(self.sections.get(destination) or {})

    def objects(self, destination: str) -> dict[str, str]:
        """segment → the object id the file gives for it in `destination`."""
        key = registry.spec(destination).objects_key
        return {str(k): str(v) for k, v in (self.section(destination).get(key) or {}).items()}

    def lookalikes(self, destination: str) -> dict[str, dict]:
        return {str(k): dict(v or {}) for k, v in (self.section(destination).get("lookalikes") or {}).items()}

    def display_name(self, segment: str) -> str:
        return self.names.get(segment) or default_name(segment)

    def min_audience_floor(self, destination: str) -> int | None:
        """Removals leaving an ad audience below this warn (`<destination>.min_audience_floor`, default 100)."""
        if not registry.spec(destination).is_ad:
            return None
        return int(self.section(destination).get("min_audience_floor", 100))


def load_routing(override: str | None = None) -> Routing:
    raw = env("RETENTION_DESTINATIONS_CONFIG", override)
    path = Path(raw).expanduser() if raw else DEFAULT_PATH
    if not path.is_file():
        raise ConfigError(f"RETENTION_DESTINATIONS_CONFIG={str(path)!r} does not name a readable file.")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"RETENTION_DESTINATIONS_CONFIG={str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: must be a mapping of destination sections")
    known = (*registry.names(), *SHARED_SECTIONS)
    for key, value in spec.items():
        if key not in known:
            nearest = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f'; did you mean "{nearest[0]}"?' if nearest else ""
            raise ConfigError(f"{path}: unknown section {key!r} (known: {', '.join(known)}){hint}")
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{path}: {key} must be a mapping")
    sections = {name: dict(spec.get(name) or {}) for name in registry.names()}
    for name, section in sections.items():
        objects_key = registry.spec(name).objects_key
        for key in (objects_key, "lookalikes"):
            if not isinstance(section.get(key) or {}, dict):
                raise ConfigError(f"{path}: {name}.{key} must map segment names to values")
        floor = section.get("min_audience_floor", 100)
        if not isinstance(floor, int) or isinstance(floor, bool) or floor < 0:
            raise ConfigError(f"{path}: {name}.min_audience_floor must be a non-negative integer")
    names = {str(k): str(v) for k, v in (spec.get("names") or {}).items()}
    for segment, name in names.items():
        if (word := _SENSITIVE.search(name)) is not None:
            raise ConfigError(
                f"{path}: names.{segment}: {name!r} contains {word.group(1)!r}. Vendors see this name, and ad "
                "platforms restrict audiences whose names suggest financial or health status; use a neutral name."
            )
    return Routing(sections=sections, names=names, source=str(path))


def routing_problems(segments: list[Segment], routing: Routing) -> list[str]:
    """Every target segment routed to a destination that needs an id the file lacks (the vendor cannot create
    it), or whose section the vendor's own check refuses, as `segments/<file>:<line of destinations:>: …`."""
    problems = []
    checked: set[str] = set()
    for segment in (s for s in segments if s.purpose == "target"):
        where = segment.at(header_field="destinations")
        for destination in segment.destinations:
            if destination not in registry.names():
                continue
            spec = registry.spec(destination)
            check = registry.plugin(destination).check_section
            if check is not None and destination not in checked:
                checked.add(destination)
                problems += [f"{where}: routed to {destination} but {routing.file} {p}" for p in check(
                    routing.section(destination))]  # fmt: skip
            if not spec.object_required or spec.creates_objects:
                continue
            table = routing.objects(destination)
            if segment.name in table:
                continue
            known = sorted(table)
            key = f"{destination}.{spec.objects_key}"
            nearest = difflib.get_close_matches(segment.name, known, n=1, cutoff=0.6)
            problems.append(
                f"{where}: routed to {destination} but {routing.file} has no {key}.{segment.name} "
                f"(known: {', '.join(known) or 'none'}; {spec.label}'s API cannot create it)"
                + (f'; is "{nearest[0]}" meant to be {segment.name}?' if nearest else "")
            )
    return problems


def check_routing(segments: list[Segment], routing: Routing | None = None) -> None:
    """Definitions load fails (ConfigError) when a segment is routed somewhere its id is missing, instead of the
    sync aborting after other destinations were already sent."""
    problems = routing_problems(segments, routing or load_routing())
    if problems:
        raise ConfigError("\n".join(problems))
