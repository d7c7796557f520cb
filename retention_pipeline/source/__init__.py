"""Source stage: Metronome (real API or embedded sandbox tenant) and contacts into the DuckDB `raw` schema."""
