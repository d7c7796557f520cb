"""The measurement stage's definitions: the SQL in dbt_like_sql/measurement/, downstream of segments and syncs."""

import dagster as dg

from retention_pipeline.destinations.definitions import defs as destination_defs
from retention_pipeline.models.assets import build_model_assets, table_producers
from retention_pipeline.models.definitions import defs as model_defs
from retention_pipeline.models.project import SQL_ROOT, load_project
from retention_pipeline.segments.definitions import defs as segment_defs
from retention_pipeline.source.definitions import defs as source_defs

_producers = table_producers(
    [*source_defs.assets, *model_defs.assets, *segment_defs.assets, *destination_defs.assets]
)
defs = dg.Definitions(
    assets=build_model_assets(
        load_project(SQL_ROOT, set(_producers), folders={"measurement"}), _producers, group="measurement"
    )
)
