"""The models stage's definitions: every SQL file under dbt_like_sql/ (except segments/) as assets."""

import dagster as dg

from retention_pipeline.models.assets import build_model_assets, table_producers
from retention_pipeline.models.project import SQL_ROOT, load_project
from retention_pipeline.source.definitions import defs as source_defs

_producers = table_producers(source_defs.assets)
MODELS = load_project(SQL_ROOT, set(_producers))
defs = dg.Definitions(assets=build_model_assets(MODELS, _producers))
