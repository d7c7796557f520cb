"""Segments stage: business rules in dbt_like_sql/segments/ → per-cadence membership snapshots in DuckDB."""
