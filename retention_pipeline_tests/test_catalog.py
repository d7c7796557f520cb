"""The catalog of which asset writes which table: it reproduces the lineage stages used to read from each other's
Definitions, and agrees with the metadata of the assets it declares."""

import dagster as dg
import pytest

from retention_pipeline import catalog
from retention_pipeline.catalog import STAGES, table_producers, written_tables
from retention_pipeline.definitions import defs
from retention_pipeline.destinations import assets as sync_assets

# Every asset and its upstream assets, dumped from retention_pipeline.definitions before the stages took lineage from
# the catalog instead of each other's Definitions (and equal after). A change to the SQL (a new model, a new
# reference) changes this on purpose: update it together with that change.
EXPECTED_DEPS = {
    "analytics/customer_features_daily": [
        "staging/stg_activity_metric",
        "staging/stg_balance_ledger",
        "staging/stg_balance_segments",
        "staging/stg_contracts",
        "staging/stg_customers",
        "staging/stg_invoices",
        "staging/stg_usage",
    ],
    "analytics/customer_features_hourly": [
        "staging/stg_activity_metric",
        "staging/stg_balance_ledger",
        "staging/stg_balance_segments",
        "staging/stg_contracts",
        "staging/stg_customers",
        "staging/stg_invoices",
        "staging/stg_usage",
    ],
    "analytics/customer_features_latest": [
        "analytics/customer_features_daily",
        "analytics/customer_features_hourly",
    ],
    "analytics/customers": [
        "analytics/customer_features_daily",
        "analytics/customer_features_hourly",
        "raw/metronome_contracts",
        "staging/stg_contracts",
        "staging/stg_customers",
    ],
    "analytics/churn_model_weekly": [
        "staging/stg_activity_metric",
        "staging/stg_balance_ledger",
        "staging/stg_balance_segments",
        "staging/stg_contracts",
        "staging/stg_customers",
        "staging/stg_invoices",
        "staging/stg_usage",
    ],
    "analytics/churn_scores_daily": [
        "analytics/churn_model_weekly",
        "analytics/customer_features_daily",
        "staging/stg_activity_metric",
        "staging/stg_contracts",
        "staging/stg_customers",
        "staging/stg_usage",
    ],
    "analytics/lifecycle_events": ["staging/stg_balance_segments", "staging/stg_contracts"],
    "analytics/usage_daily": ["staging/stg_usage"],
    "operations/published_copy": [
        "analytics/customer_features_latest",
        "analytics/customers",
        "analytics/lifecycle_events",
        "analytics/usage_daily",
        "segments/added_revenue",
        "segments/holdout_lift",
        "segments/segment_comparison",
        "segments/segment_daily_stats",
        "segments/segment_destination_daily",
        "staging/stg_activity_metric",
        "staging/stg_balance_ledger",
        "staging/stg_balance_segments",
        "staging/stg_contracts",
        "staging/stg_customers",
        "staging/stg_invoices",
        "staging/stg_usage",
        "sync/activation_daily",
        "sync/activation_hourly",
    ],
    "pipeline/bindings": [],
    "raw/contacts": ["raw/metronome_customers"],
    "raw/metronome_balances": ["pipeline/bindings", "raw/metronome_customers"],
    "raw/metronome_billable_metrics": ["pipeline/bindings"],
    "raw/metronome_contracts": ["pipeline/bindings", "raw/metronome_customers"],
    "raw/metronome_customers": ["pipeline/bindings"],
    "raw/metronome_invoices": ["pipeline/bindings", "raw/metronome_customers"],
    "raw/metronome_usage_daily": ["pipeline/bindings"],
    "raw/metronome_usage_hourly": ["pipeline/bindings"],
    "segments/added_revenue": ["segments/members_daily", "segments/members_hourly", "staging/stg_invoices"],
    "segments/holdout_lift": [
        "analytics/usage_daily",
        "segments/members_daily",
        "segments/members_hourly",
        "staging/stg_activity_metric",
        "staging/stg_contracts",
        "staging/stg_usage",
    ],
    "segments/members_daily": [
        "analytics/churn_scores_daily",
        "analytics/customer_features_daily",
        "raw/contacts",
    ],
    "segments/segment_comparison": [
        "segments/members_daily",
        "segments/members_hourly",
        "staging/stg_activity_metric",
        "staging/stg_contracts",
        "staging/stg_customers",
        "staging/stg_usage",
    ],
    "segments/members_hourly": ["analytics/customer_features_hourly", "raw/contacts"],
    "segments/segment_daily_stats": ["segments/members_daily", "segments/members_hourly"],
    "segments/segment_destination_daily": [
        "segments/members_daily",
        "segments/members_hourly",
        "sync/activation_daily",
        "sync/activation_hourly",
    ],
    "staging/stg_activity_metric": ["raw/metronome_billable_metrics"],
    "staging/stg_balance_ledger": ["raw/metronome_balances"],
    "staging/stg_balance_segments": ["raw/metronome_balances"],
    "staging/stg_contracts": ["raw/metronome_contracts", "staging/stg_customers"],
    "staging/stg_customers": ["raw/metronome_customers"],
    "staging/stg_invoices": ["raw/metronome_invoices"],
    "staging/stg_usage": ["raw/metronome_usage_daily", "raw/metronome_usage_hourly"],
    "sync/activation_daily": ["segments/members_daily"],
    "sync/activation_hourly": ["segments/members_hourly"],
}


def _graph() -> dict[str, list[str]]:
    graph = defs.get_repository_def().asset_graph
    return {
        node.key.to_user_string(): sorted(k.to_user_string() for k in node.parent_keys)
        for node in graph.asset_nodes
    }


def test_asset_dependency_graph_is_unchanged():
    actual = _graph()
    added = sorted(actual.keys() - EXPECTED_DEPS.keys())
    removed = sorted(EXPECTED_DEPS.keys() - actual.keys())
    changed = {
        key: {"now": actual[key], "was": EXPECTED_DEPS[key]}
        for key in sorted(actual.keys() & EXPECTED_DEPS.keys())
        if actual[key] != EXPECTED_DEPS[key]
    }
    assert (added, removed, changed) == ([], [], {})


def _declared_assets() -> list[dg.AssetsDefinition]:
    """Every asset of the project that declares a table, except the bindings (the environment's, not a stage's)."""
    return [
        a
        for a in defs.assets
        if isinstance(a, dg.AssetsDefinition)
        and any(written_tables(s.metadata) for s in a.specs)
        and dg.AssetKey(["pipeline", "bindings"]) not in a.keys
    ]


def test_every_declaration_matches_the_metadata_of_the_asset_it_declares():
    declared = {d.key: set(d.tables) for d in catalog.upstream_of("operations").declarations}
    written = {s.key: written_tables(s.metadata) for a in _declared_assets() for s in a.specs}
    assert declared == written


def test_catalog_producers_equal_the_assets_producers():
    def as_sets(producers):
        return {table: set(keys) for table, keys in producers.items()}

    assert as_sets(catalog.upstream_of("operations").producers()) == as_sets(
        table_producers(_declared_assets())
    )


def test_declarations_carry_their_stage_and_cadence():
    graph = defs.get_repository_def().asset_graph
    for declaration in catalog.upstream_of("operations").declarations:
        node = graph.get(declaration.key)
        assert declaration.stage in STAGES
        assert declaration.cadence == node.tags.get("cadence"), declaration.key
        assert (declaration.cadence is None) == (node.partitions_def is None), declaration.key


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_sees_only_the_tables_of_the_stages_before_it(stage):
    earlier = set(STAGES[: STAGES.index(stage)])
    assert {d.stage for d in catalog.upstream_of(stage).declarations} <= earlier


def test_declaration_metadata_round_trips():
    declaration = sync_assets.declaration("daily")
    assert written_tables(declaration.metadata) == set(declaration.tables)
    assert declaration.metadata["dagster/table_name"] == "sync.destination_state"
