"""The segments stage's definitions: one members asset per cadence that has segments.

What segment SQL reads resolves to its writer through the catalog; the models come from it too (loaded once)."""

import dagster as dg

from retention_pipeline import catalog
from retention_pipeline.models.project import upstream_models
from retention_pipeline.segments.assets import build_segment_asset
from retention_pipeline.segments.project import SegmentError, load_segments

MODELS = catalog.models()
_producers = catalog.upstream_of("segments").producers()
# Bound against the models' typed columns here, so a misspelt column fails definitions load (file:line, nearest
# name) instead of the run of its cadence.
SEGMENTS = load_segments(known_tables=set(_producers), models=MODELS)


def _deps(cadence: str) -> list[dg.AssetKey]:
    refs = {ref for s in SEGMENTS if s.cadence == cadence for ref in s.refs}
    features = dg.AssetKey(["analytics", f"customer_features_{cadence}"])
    if features not in _producers.get("analytics.customer_features", []):
        first = next(s for s in SEGMENTS if s.cadence == cadence)
        raise SegmentError(
            f"segments/{first.path.name}: cadence: {cadence!r} has no features; add it to `cadences` in "
            "dbt_like_sql/analytics/customer_features.sql"
        )
    keys = {features, dg.AssetKey(["raw", "contacts"])}
    keys |= {k for ref in refs for k in _producers[ref]}
    return sorted(keys, key=lambda k: k.to_user_string())


def _gated(cadence: str) -> list[str]:
    """Models whose ERROR tests gate this cadence's activation: the features and everything they read."""
    refs = {ref for s in SEGMENTS if s.cadence == cadence for ref in s.refs}
    return upstream_models(MODELS, {"analytics.customer_features"} | refs)


# One members asset per cadence that has segments, as the catalog declares them.
defs = dg.Definitions(
    assets=[build_segment_asset(c, SEGMENTS, _deps(c), _gated(c)) for c in catalog.segment_cadences()]
)
