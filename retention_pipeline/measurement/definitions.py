"""The measurement stage's definitions: the SQL in dbt_like_sql/measurement/, downstream of segments and syncs.

Who writes what the SQL reads comes from the catalog (declarations), not from the other stages' definitions."""

import dagster as dg

from retention_pipeline import catalog
from retention_pipeline.models.assets import build_model_assets

defs = dg.Definitions(
    assets=build_model_assets(
        catalog.measurement_models(), catalog.upstream_of("measurement").producers(), group="measurement"
    )
)
