"""Models stage: SQL files in dbt_like_sql/ become DuckDB tables, each a Dagster asset with its tests as checks."""
