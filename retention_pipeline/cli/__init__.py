"""The `retention` command (also `python -m retention_pipeline`): one module per subcommand, each with
`register(subparsers)` that sets `handler`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from retention_pipeline.config import ConfigError

COMMANDS = {"run": "run", "sql": "sql", "preview": "preview", "new-segment": "new_segment"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="retention", description="retention_pipeline: " + __doc__.split(":")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # Only the chosen subcommand is imported: the others load Dagster, whose import time `sql` must not pay.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for module in [COMMANDS[chosen]] if chosen in COMMANDS else COMMANDS.values():
        importlib.import_module(f"retention_pipeline.cli.{module}").register(sub)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


def retention_command() -> str:
    """How to call `retention` from here as printed: the console script beside this interpreter (.venv/bin/retention
    from the repo root), else this interpreter with -m."""
    script = Path(sys.executable).parent / "retention"
    if script.exists():
        relative = os.path.relpath(script)
        return relative if not relative.startswith("..") else str(script)
    return f"{sys.executable} -m retention_pipeline"


def python_command() -> str:
    """This interpreter as printed in a hint (.venv/bin/python from the repo root)."""
    relative = os.path.relpath(sys.executable)
    return relative if not relative.startswith("..") else sys.executable
