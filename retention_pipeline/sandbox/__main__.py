"""`python -m retention_pipeline.sandbox metronome --port 0 ...`: serve a sandbox until SIGINT/SIGTERM.

The first line on stdout is the base URL and nothing else, so scripts can read it even with `--port 0`.
New systems register one more subparser in `build_parser`; shared server flags come from `_server_flags`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

NOW_ENV_VAR = "RETENTION_SANDBOX_NOW"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m retention_pipeline.sandbox", description=__doc__)
    systems = parser.add_subparsers(dest="system", required=True, metavar="SYSTEM")

    metronome = systems.add_parser("metronome", help="Metronome billing API", parents=[_server_flags()])
    metronome.add_argument("--customers", type=int, default=300)
    metronome.add_argument("--seed", type=int, default=42)
    metronome.add_argument("--history-days", type=int, default=120)
    metronome.add_argument(
        "--now",
        type=_timestamp,
        default=None,
        help=f"tenant clock (ISO 8601 with offset); default ${NOW_ENV_VAR}, else the current time",
    )
    metronome.add_argument("--usage-page-size", type=int, default=5000)
    metronome.add_argument("--bearer-token", default=None, help="required token; default accepts any bearer")
    metronome.set_defaults(run=_run_metronome)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        parser.error(str(error))


def _server_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--host", default="127.0.0.1")
    flags.add_argument("--port", type=int, required=True, help="0 picks a free port (printed on start)")
    return flags


def _timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 timestamp: {value!r}") from None
    if parsed.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"timestamp needs a UTC offset (e.g. Z): {value!r}")
    return parsed.astimezone(UTC)


def _resolve_now(flag: datetime | None) -> datetime | None:
    if flag is not None:
        return flag
    env = os.environ.get(NOW_ENV_VAR)
    if not env:
        return None
    try:
        return _timestamp(env)
    except argparse.ArgumentTypeError as error:
        raise ValueError(f"{NOW_ENV_VAR}: {error}") from None


def _run_metronome(args: argparse.Namespace) -> int:
    # Imported here so each subcommand loads only its own system's sandbox.
    from retention_pipeline.source.sandbox.server import MetronomeSandbox
    from retention_pipeline.source.sandbox.tenant import TenantSpec, build_tenant

    spec = TenantSpec(
        seed=args.seed, customers=args.customers, history_days=args.history_days, now=_resolve_now(args.now)
    )
    sandbox = MetronomeSandbox(
        build_tenant(spec), bearer_token=args.bearer_token, usage_page_size=args.usage_page_size
    )
    with sandbox.serve(args.host, args.port) as server:
        _serve_until_signalled(server.url)
    return 0


def _serve_until_signalled(url: str) -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(url, flush=True)
    stop.wait()


if __name__ == "__main__":
    sys.exit(main())
