"""retention_pipeline: Metronome billing truth → DuckDB features → segments → activation → measurement."""
