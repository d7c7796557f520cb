"""The models stage's definitions: every SQL file under dbt_like_sql/ (except segments/ and measurement/) as assets.

What the SQL reads outside the models (the raw tables) resolves to its writer through the catalog."""

import dagster as dg

from retention_pipeline import catalog
from retention_pipeline.models.assets import build_model_assets

MODELS = catalog.models()
defs = dg.Definitions(assets=build_model_assets(MODELS, catalog.upstream_of("models").producers()))
