"""Command-line entry point for the offline sandboxes: `python -m retention_pipeline.sandbox <system> ...`.

Each subcommand serves one external system's wire format on loopback so the pipeline, `make run` and manual
exploration can run without credentials or network access.
"""
