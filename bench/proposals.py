"""A fix this benchmark recommends, measured on a copy of the data so the recommendation's numbers are reproducible.

Not the pipeline: the project's own SQL stays what is measured. The two balance staging models unnest their JSON
arrays with a lateral join (`FROM raw.metronome_balances AS b, unnest(CAST(b.ledger AS JSON[])) AS t(entry)`),
which DuckDB decorrelates into a hash join keyed on the whole JSON text of every balance. The proposal unnests in
the SELECT list instead (same rows, same columns), materialized as the project materializes the model. Applied only
while the project's staging SQL still has the lateral form it replaces.
"""

from __future__ import annotations

from pathlib import Path

from bench import cache

LATERAL_LEDGER = "unnest(CAST(b.ledger AS JSON[])) AS t(entry)"

PROPOSED_STAGING = {
    "staging.stg_balance_ledger": """
        WITH entries AS (
            SELECT id AS balance_id, customer_id, type AS balance_type, unnest(CAST(ledger AS JSON[])) AS entry
            FROM raw.metronome_balances
            WHERE archived_at IS NULL
        )
        SELECT balance_id, customer_id, balance_type, entry ->> 'type' AS entry_type,
            entry ->> 'segment_id' AS segment_id, CAST(entry ->> 'amount' AS DOUBLE) AS amount,
            CAST(entry ->> 'timestamp' AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS entry_at
        FROM entries""",
    "staging.stg_balance_segments": """
        WITH items AS (
            SELECT id AS balance_id, customer_id, contract_id, type AS balance_type, credit_type_id,
                unnest(CAST(schedule_items AS JSON[])) AS item
            FROM raw.metronome_balances
            WHERE archived_at IS NULL
        )
        SELECT balance_id, customer_id, contract_id, balance_type, credit_type_id, item ->> 'id' AS segment_id,
            CAST(item ->> 'amount' AS DOUBLE) AS amount,
            CAST(item ->> 'starting_at' AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS starting_at,
            CAST(item ->> 'ending_before' AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS ending_before
        FROM items""",
}


def staging_applies() -> bool:
    from retention_pipeline.models.project import SQL_ROOT

    path = SQL_ROOT / "staging" / "stg_balance_ledger.sql"
    return path.exists() and LATERAL_LEDGER in path.read_text()


def build_project_staging(db: Path) -> None:
    """The two staging models as the project builds them (build_model), for the side-by-side."""
    from bench import pipeline
    from retention_pipeline.models.assets import build_model, set_run_variables

    with cache.connect(db) as con:
        set_run_variables(con, "daily", cache.AS_OF)
        for table in PROPOSED_STAGING:
            build_model(con, pipeline.model(table))


def build_proposed_staging(db: Path) -> None:
    """The two staging models from the proposed SQL, materialized as the project's headers say."""
    from bench import pipeline

    with cache.connect(db) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS staging")
        for table, sql in PROPOSED_STAGING.items():
            kind = "VIEW" if pipeline.model(table).materialized == "view" else "TABLE"
            existing = con.execute(
                "SELECT table_type FROM information_schema.tables WHERE table_schema || '.' || table_name = ?",
                [table],
            ).fetchall()
            if existing:
                con.execute(f"DROP {'VIEW' if existing[0][0] == 'VIEW' else 'TABLE'} {table}")
            con.execute(f"CREATE {kind} {table} AS {sql}")


def same_staging(project_db: Path, proposed_db: Path) -> bool:
    """Both staging models hold exactly the same rows (as multisets) under either SQL."""
    with cache.connect(project_db) as con:
        con.execute(f"ATTACH '{proposed_db}' AS proposed (READ_ONLY)")
        try:
            for table in PROPOSED_STAGING:
                schema, name = table.split(".")
                differing = con.execute(
                    f"SELECT count(*) FROM ((SELECT * FROM {table} EXCEPT ALL SELECT * FROM proposed.{schema}.{name}) "
                    f"UNION ALL (SELECT * FROM proposed.{schema}.{name} EXCEPT ALL SELECT * FROM {table}))"
                ).fetchone()[0]
                if differing:
                    return False
        finally:
            con.execute("DETACH proposed")
    return True
