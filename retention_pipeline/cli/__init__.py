"""The `retention` command (also `python -m retention_pipeline`): one module per subcommand, each with
`register(subparsers)` that sets `handler`."""

from __future__ import annotations

import argparse
import sys

from retention_pipeline.cli import new_segment, preview, run, sql
from retention_pipeline.config import ConfigError

COMMANDS = (run, sql, preview, new_segment)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="retention", description="retention_pipeline: " + __doc__.split(":")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
