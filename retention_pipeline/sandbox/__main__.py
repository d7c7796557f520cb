"""`python -m retention_pipeline.sandbox metronome --port 0 ...`: serve a sandbox until SIGINT/SIGTERM.

The first line on stdout is the base URL and nothing else, so scripts can read it even with `--port 0`.
`tiktok` and `pinterest` then print `export NAME=value` lines: the URL and credentials that point the pipeline at
the sandbox as if it were the real API (`eval "$(tail -n +2 …)"`).
New systems register one more subparser in `build_parser`; shared server flags come from `_server_flags`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

NOW_ENV_VAR = "RETENTION_SANDBOX_NOW"
# Printed when --access-token is not given: the sandbox then accepts any non-empty token.
SANDBOX_TOKEN = "sandbox-token"


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

    customerio = systems.add_parser(
        "customerio",
        help="Customer.io Track v2 batch, manual segments, App API segments",
        parents=[_server_flags()],
    )
    customerio.add_argument("--site-id", default=None, help="required Track user; default accepts any")
    customerio.add_argument("--api-key", default=None, help="required Track key; default accepts any")
    customerio.add_argument("--app-api-key", default=None, help="required App API key; default accepts any")
    customerio.add_argument("--region", choices=("us", "eu"), default="us")
    customerio.add_argument(
        "--requests-per-second", type=float, default=None, help="answer 429 above this rate"
    )
    customerio.set_defaults(run=_run_customerio)

    meta = systems.add_parser("meta", help="Meta custom audiences (Graph API)", parents=[_server_flags()])
    meta.add_argument("--access-token", default=None, help="required token; default accepts any")
    meta.add_argument("--ad-account-id", default="1234567890")
    meta.add_argument("--graph-version", default="v25.0", help="version segment of the printed URL")
    meta.add_argument(
        "--requests-per-second", type=float, default=None, help="throttle (code 80003) above this"
    )
    meta.set_defaults(run=_run_meta)

    google = systems.add_parser(
        "google", help="Google Data Manager audience members", parents=[_server_flags()]
    )
    google.add_argument("--access-token", default=None, help="required token; default accepts any")
    google.add_argument("--requests-per-second", type=float, default=None, help="answer 429 above this rate")
    google.set_defaults(run=_run_google)

    tiktok = systems.add_parser(
        "tiktok", help="TikTok custom audiences (API for Business, Segment API)", parents=[_server_flags()]
    )
    tiktok.add_argument("--access-token", default=None, help="required token; default accepts any")
    tiktok.add_argument("--advertiser-id", default="7000000000000000001")
    tiktok.add_argument("--api-version", default="v1.3", help="version segment of the printed URL")
    tiktok.add_argument("--max-rows", type=int, default=1000, help="people per mapping request (else 40011)")
    tiktok.add_argument(
        "--requests-per-second", type=float, default=None, help="throttle (code 40100) above this"
    )
    tiktok.set_defaults(run=_run_tiktok)

    pinterest = systems.add_parser(
        "pinterest", help="Pinterest customer lists and audiences (API v5)", parents=[_server_flags()]
    )
    pinterest.add_argument("--access-token", default=None, help="required token; default accepts any")
    pinterest.add_argument("--ad-account-id", default="549756359984")
    pinterest.add_argument("--max-records", type=int, default=10_000, help="records per request (else 400)")
    pinterest.add_argument(
        "--requests-per-second", type=float, default=None, help="answer 429 (code 8) above this"
    )
    pinterest.set_defaults(run=_run_pinterest)
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
    from retention_pipeline.sandbox.metronome.server import MetronomeSandbox
    from retention_pipeline.sandbox.metronome.tenant import TenantSpec, build_tenant

    spec = TenantSpec(
        seed=args.seed, customers=args.customers, history_days=args.history_days, now=_resolve_now(args.now)
    )
    sandbox = MetronomeSandbox(
        build_tenant(spec), bearer_token=args.bearer_token, usage_page_size=args.usage_page_size
    )
    with sandbox.serve(args.host, args.port) as server:
        _serve_until_signalled(server.url)
    return 0


def _run_customerio(args: argparse.Namespace) -> int:
    from retention_pipeline.sandbox.customerio import CustomerIoSandbox

    sandbox = CustomerIoSandbox(
        site_id=args.site_id,
        api_key=args.api_key,
        app_api_key=args.app_api_key,
        region=args.region,
        requests_per_second=args.requests_per_second,
    )
    with sandbox.serve(args.host, args.port) as server:
        _serve_until_signalled(server.url)
    return 0


def _run_meta(args: argparse.Namespace) -> int:
    from retention_pipeline.sandbox.meta import MetaSandbox

    sandbox = MetaSandbox(
        access_token=args.access_token,
        ad_account_id=args.ad_account_id,
        requests_per_second=args.requests_per_second,
    )
    with sandbox.serve(args.host, args.port) as server:
        _serve_until_signalled(f"{server.url}/{args.graph_version}")  # ready to use as META_GRAPH_URL
    return 0


def _run_google(args: argparse.Namespace) -> int:
    from retention_pipeline.sandbox.google import GoogleDataManagerSandbox

    sandbox = GoogleDataManagerSandbox(
        access_token=args.access_token, requests_per_second=args.requests_per_second
    )
    with sandbox.serve(args.host, args.port) as server:
        _serve_until_signalled(server.url)
    return 0


def _run_tiktok(args: argparse.Namespace) -> int:
    from retention_pipeline.sandbox.tiktok import TikTokSandbox

    if not args.advertiser_id.isdigit():
        raise ValueError(f"--advertiser-id {args.advertiser_id!r} must be numeric (as TIKTOK_ADVERTISER_ID)")
    sandbox = TikTokSandbox(
        access_token=args.access_token,
        advertiser_id=args.advertiser_id,
        requests_per_second=args.requests_per_second,
        max_rows=args.max_rows,
    )
    with sandbox.serve(args.host, args.port) as server:
        url = f"{server.url}/open_api/{args.api_version}"
        _serve_until_signalled(url, {
            "TIKTOK_API_URL": url,
            "TIKTOK_ACCESS_TOKEN": args.access_token or SANDBOX_TOKEN,
            "TIKTOK_ADVERTISER_ID": args.advertiser_id,
        })  # fmt: skip
    return 0


def _run_pinterest(args: argparse.Namespace) -> int:
    from retention_pipeline.sandbox.pinterest import PinterestSandbox

    if not args.ad_account_id.isdigit():
        raise ValueError(
            f"--ad-account-id {args.ad_account_id!r} must be numeric (as PINTEREST_AD_ACCOUNT_ID)"
        )
    sandbox = PinterestSandbox(
        access_token=args.access_token,
        ad_account_id=args.ad_account_id,
        requests_per_second=args.requests_per_second,
        max_records=args.max_records,
    )
    with sandbox.serve(args.host, args.port) as server:
        url = f"{server.url}/v5"
        _serve_until_signalled(url, {
            "PINTEREST_API_URL": url,
            "PINTEREST_ACCESS_TOKEN": args.access_token or SANDBOX_TOKEN,
            "PINTEREST_AD_ACCOUNT_ID": args.ad_account_id,
        })  # fmt: skip
    return 0


def _serve_until_signalled(url: str, exports: dict[str, str] | None = None) -> None:
    """Print the URL (the first line), then `export NAME=value` for each of `exports`, and wait for a signal."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(url, flush=True)
    for name, value in (exports or {}).items():
        print(f"export {name}={shlex.quote(value)}", flush=True)
    stop.wait()


if __name__ == "__main__":
    sys.exit(main())
