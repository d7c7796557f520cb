"""Every destination, one line each. Adding a destination = its folder under `destinations/` + one line here.

The engine, the routing view (`segments.audiences`), the measurement SQL and the checks read these properties;
vendor code lives only in the folders. Limits are the vendors' documented ones where they publish them, else the
value we chose and say so in docs/activation.md.
"""

from __future__ import annotations

import importlib
from functools import cache

from retention_pipeline.destinations.plugin import AD, MESSAGING, DestinationPlugin, DestinationSpec

# fmt: off
DESTINATIONS: tuple[DestinationSpec, ...] = (
    DestinationSpec("customerio", "Customer.io", MESSAGING, ("email",), 1000, True, False, False, "manual_segments", True, False, "retention_pipeline.destinations.customerio", ("CUSTOMERIO_SITE_ID", "CUSTOMERIO_API_KEY")),  # noqa: E501
    DestinationSpec("meta", "Meta", AD, ("email", "phone"), 10_000, True, True, True, "audiences", True, True, "retention_pipeline.destinations.meta", ("META_ACCESS_TOKEN", "META_AD_ACCOUNT_ID"), 100),  # noqa: E501
    DestinationSpec("google", "Google", AD, ("email", "phone"), 10_000, True, True, True, "user_lists", False, True, "retention_pipeline.destinations.google", ("GOOGLE_ACCESS_TOKEN",)),  # noqa: E501
    DestinationSpec("tiktok", "TikTok", AD, ("email", "phone"), 1000, True, True, True, "audiences", True, True, "retention_pipeline.destinations.tiktok", ("TIKTOK_ACCESS_TOKEN", "TIKTOK_ADVERTISER_ID"), 100),  # noqa: E501
    DestinationSpec("pinterest", "Pinterest", AD, ("email",), 10_000, True, True, True, "customer_lists", True, True, "retention_pipeline.destinations.pinterest", ("PINTEREST_ACCESS_TOKEN", "PINTEREST_AD_ACCOUNT_ID"), 100),  # noqa: E501
)
# fmt: on
# Not a networked destination: the Parquet export of each synced partition (destinations/warehouse_export.py).
WAREHOUSE = "warehouse"

_extra: dict[str, DestinationSpec] = {}


def specs() -> dict[str, DestinationSpec]:
    """name → spec, the registry plus any registered at run time (tests register throwaway destinations)."""
    return {s.name: s for s in DESTINATIONS} | _extra


def spec(name: str) -> DestinationSpec:
    return specs()[name]


def names() -> tuple[str, ...]:
    return tuple(specs())


def ad_names() -> tuple[str, ...]:
    return tuple(n for n, s in specs().items() if s.is_ad)


def register(extra: DestinationSpec) -> None:
    """Add a destination that is not in DESTINATIONS (a plug-in outside this package, or a test's)."""
    _extra[extra.name] = extra
    plugin.cache_clear()


def unregister(name: str) -> None:
    _extra.pop(name, None)
    plugin.cache_clear()


@cache
def plugin(name: str) -> DestinationPlugin:
    """The vendor folder's PLUGIN, imported on first use (the registry itself stays import-light)."""
    module = importlib.import_module(spec(name).package)
    return module.PLUGIN


def policy_sql() -> str:
    """The registry as a DuckDB VALUES list (destination, is_ad, consent_required, suppression_applies): what the
    routing view joins on instead of naming vendors."""
    rows = ", ".join(
        f"('{s.name}', {str(s.is_ad).lower()}, {str(s.consent_required).lower()}, "
        f"{str(s.suppression_applies).lower()})"
        for s in specs().values()
    )
    return (
        f"SELECT * FROM (VALUES {rows}) AS policy(destination, is_ad, consent_required, suppression_applies)"
    )
