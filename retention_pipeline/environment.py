"""Which Metronome tenant and which destination accounts a run talks to — decided once, recorded in the DuckDB file.

Every external system resolves here to a `Target`: "sandbox" or the account/workspace the credentials reach. The
resources build their real or sandbox transport from this decision, and nowhere else. The DuckDB file remembers the
targets it has been used with (`pipeline.bindings`): acknowledged sync state is only meaningful for the target that
acknowledged it, so a run whose targets differ from the recorded ones (a lost secret quietly selecting a sandbox, a
token for another account) fails before it extracts or sends anything, naming the variables — unless the switch is
allowed explicitly with RETENTION_ALLOW_TARGET_CHANGE. With RETENTION_ENV=production a missing credential is a
configuration error instead of a sandbox. A new file (no recorded destination targets, no sync state) meeting a real
destination is refused unless RETENTION_FIRST_RUN says this is the first run: a mistyped RETENTION_DUCKDB_PATH
would otherwise start from nothing and re-send every member.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import duckdb

from retention_pipeline.config import ConfigError, env
from retention_pipeline.destinations import registry
from retention_pipeline.redact import redact_url
from retention_pipeline.warehouse import DuckDBWarehouse, transaction

SANDBOX = "sandbox"
ENVIRONMENTS = ("development", "production")
TRUE, FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}

DDL = """
CREATE SCHEMA IF NOT EXISTS pipeline;
CREATE TABLE IF NOT EXISTS pipeline.bindings (
    system VARCHAR NOT NULL, identity VARCHAR NOT NULL, variables VARCHAR NOT NULL, bound_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP NOT NULL, replaced_at TIMESTAMP
);
"""


@dataclass(frozen=True)
class Target:
    """One external system as this run will reach it. `identity` is "sandbox" or the account it reaches."""

    system: str
    identity: str
    variables: tuple[str, ...]  # the env vars that choose it, for messages
    settings: dict  # resolved values the resource needs (credentials never leave the process)

    @property
    def is_sandbox(self) -> bool:
        return self.identity == SANDBOX

    def describe(self) -> str:
        return f"{label(self.system)} {self.identity!r}"


def retention_env() -> str:
    value = (env("RETENTION_ENV") or "development").lower()
    if value not in ENVIRONMENTS:
        raise ConfigError(f"RETENTION_ENV={value!r} must be one of {', '.join(ENVIRONMENTS)}.")
    return value


def sandbox_or_fail(system: str, variables: tuple[str, ...]) -> Target:
    """No credentials: the sandbox in development, a configuration error in production."""
    if retention_env() == "production":
        raise ConfigError(
            f"RETENTION_ENV=production: {' and '.join(variables)} must be set for {label(system)}; in production a "
            "missing credential is an error, never a silent switch to the sandbox."
        )
    return Target(system, SANDBOX, variables, {})


def require_all(*settings: tuple[str, str | None]) -> None:
    missing = [name for name, value in settings if value is None]
    if missing:
        given = [name for name, value in settings if value is not None]
        raise ConfigError(f"{', '.join(missing)} must be set too (found {', '.join(given)}).")


def http_url(name: str, value: str) -> str:
    """An http(s) URL without a trailing slash; fails naming the variable.

    Credentials embedded in a URL (`https://user:pass@host`) are refused: httpx would send them as Basic auth in
    place of the token, and the URL would carry a secret into every message that names it."""
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{name}={redact_url(value)!r} is not an http(s) URL.")
    if parsed.username is not None or parsed.password is not None:
        raise ConfigError(
            f"{name}={redact_url(value)!r} embeds credentials (user:password@); remove them and set the token "
            "variable instead."
        )
    return value.rstrip("/")


def where(url: str) -> str:
    """host[:port][/path] of a URL: what distinguishes one deployment of an API from another."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if parsed.port:
        host += f":{parsed.port}"
    return host + parsed.path.rstrip("/")


def token_and_url(system: str, token_var: str, url_var: str, token: str | None, url: str | None) -> Target:
    """A system reached with one token at one base URL: the sandbox without the token, else the API at the URL."""
    token = env(token_var, token)
    if token is None:
        return sandbox_or_fail(system, (token_var,))
    base_url = http_url(url_var, env(url_var, url))
    return Target(system, where(base_url), (token_var, url_var), {"token": token, "url": base_url})


def metronome_target(token: str | None = None, url: str | None = None) -> Target:
    return token_and_url("metronome", "METRONOME_BEARER_TOKEN", "METRONOME_API_URL", token, url)


def label(system: str) -> str:
    """How messages name a system: the registry's label for a destination."""
    if system == "metronome":
        return "Metronome source"
    return registry.spec(system).label if system in registry.names() else system


def systems() -> tuple[str, ...]:
    return ("metronome", *registry.names())


def resolver(system: str):
    """The function that reads `system`'s target from the environment (no network)."""
    return metronome_target if system == "metronome" else registry.plugin(system).target


def resolve(systems: list[str] | tuple[str, ...]) -> list[Target]:
    """The targets of the given systems, from the environment (no network)."""
    return [resolver(s)() for s in systems]


def allowed_changes() -> set[str]:
    """Systems whose recorded target this run may replace (RETENTION_ALLOW_TARGET_CHANGE)."""
    raw = (env("RETENTION_ALLOW_TARGET_CHANGE") or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return set()
    if raw in ("1", "true", "yes", "on", "all"):
        return set(systems())
    names = {n.strip() for n in raw.split(",") if n.strip()}
    unknown = names - set(systems())
    if unknown:
        raise ConfigError(
            f"RETENTION_ALLOW_TARGET_CHANGE={raw!r}: unknown system(s) {sorted(unknown)}; use 1 (all) or a comma list "
            f"of {', '.join(systems())}."
        )
    return names


def first_run_allowed() -> bool:
    """RETENTION_FIRST_RUN: a new file may meet real destinations (`retention run --first-run` does the same for one command)."""
    raw = (env("RETENTION_FIRST_RUN") or "").strip().lower()
    if raw not in TRUE | FALSE:
        raise ConfigError(f"RETENTION_FIRST_RUN={raw!r} must be 1/true or 0/false.")
    return raw in TRUE


def is_new_file(con: duckdb.DuckDBPyConnection) -> bool:
    """No destination target recorded and no acknowledged sync state: nothing says who already got what."""
    con.execute(DDL)
    bound = con.execute("SELECT count(*) FROM pipeline.bindings WHERE system <> 'metronome'").fetchone()[0]
    if bound:
        return False
    has_state = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'sync' AND table_name = 'destination_state'"
    ).fetchone()[0]
    return not has_state or not con.execute("SELECT count(*) FROM sync.destination_state").fetchone()[0]


def _check_first_run(
    con: duckdb.DuckDBPyConnection, targets: list[Target], database: Path | str, first_run: bool
) -> list[str]:
    """Refuse a new file that would send to real destinations, unless RETENTION_FIRST_RUN says it is meant."""
    real = [t for t in targets if t.system != "metronome" and not t.is_sandbox]
    if not real:
        return []
    new, allowed = is_new_file(con), first_run or first_run_allowed()
    if new and not allowed:
        resolved = Path(database).resolve()
        raise ConfigError(
            f"RETENTION_DUCKDB_PATH={str(database)!r}"
            + ("" if str(resolved) == str(database) else f" ({resolved})")
            + " is a new DuckDB file: it records "
            "no destination targets and no sync state, so this run would send every member to "
            + ", ".join(t.describe() for t in real)
            + ". If the path is mistyped, fix RETENTION_DUCKDB_PATH. If this really is the first run, pass "
            "`retention run --first-run` (or set RETENTION_FIRST_RUN=1 for runs started from the UI or a schedule)."
        )
    if new:
        return ["first run for these destinations (RETENTION_FIRST_RUN): every member is sent"]
    if allowed:
        return ["RETENTION_FIRST_RUN is set but this file already has targets or sync state; unset it, so a "
                "mistyped RETENTION_DUCKDB_PATH is caught"]  # fmt: skip
    return []


def verify_bindings(
    con: duckdb.DuckDBPyConnection,
    targets: list[Target],
    database: Path | str,
    log=None,
    first_run: bool = False,
) -> list[str]:
    """Record first use of each target; fail if the file was used with another one (unless allowed).

    `first_run` (`retention run --first-run`) accepts a new file with real destinations for this check only, like
    RETENTION_FIRST_RUN=1 does for every run.

    One transaction: a run that fails here records nothing. Returns (and logs) what was bound or switched."""
    con.execute(DDL)
    allow = allowed_changes()
    now = datetime.now(UTC).replace(tzinfo=None)
    notes, conflicts = _check_first_run(con, targets, database, first_run), {}
    with transaction(con):
        for target in targets:
            row = con.execute(
                "SELECT identity FROM pipeline.bindings WHERE system = ? AND replaced_at IS NULL",
                [target.system],
            ).fetchone()
            if row is not None and row[0] == target.identity:
                con.execute(
                    "UPDATE pipeline.bindings SET last_used_at = ? WHERE system = ? AND replaced_at IS NULL",
                    [now, target.system],
                )
                continue
            if row is not None and target.system not in allow:
                conflicts[target.system] = _conflict(target, row[0])
                continue
            if row is None:
                notes.append(f"{target.describe()} recorded as this file's {label(target.system)} target")
            else:
                con.execute(
                    "UPDATE pipeline.bindings SET replaced_at = ? WHERE system = ? AND replaced_at IS NULL",
                    [now, target.system],
                )
                notes.append(
                    f"{label(target.system)} switched from {row[0]!r} to {target.identity!r} "
                    "(RETENTION_ALLOW_TARGET_CHANGE); acknowledged state of the old target does not count for the "
                    "new one"
                )
            con.execute(
                "INSERT INTO pipeline.bindings VALUES (?, ?, ?, ?, ?, NULL)",
                [target.system, target.identity, ", ".join(target.variables), now, now],
            )
        if conflicts:
            raise ConfigError(
                f"RETENTION_DUCKDB_PATH={str(database)!r} belongs to other targets — "
                + "; ".join(conflicts.values())
                + ". Acknowledged sync state is kept per target, so a switch re-sends every member to the new "
                "target (and a sandbox never reaches the real one). Restore the variables, point "
                "RETENTION_DUCKDB_PATH at the file of this environment, or allow the switch once with "
                f"RETENTION_ALLOW_TARGET_CHANGE={','.join(conflicts)}."
            )
    for note in notes:
        if log is not None:
            log(note)
    return notes


def _conflict(target: Target, recorded: str) -> str:
    verb = "is" if len(target.variables) == 1 else "are"
    why = (
        f"because {' and '.join(target.variables)} {verb} unset"
        if target.is_sandbox
        else f"from {', '.join(target.variables)}"
    )
    return f"{label(target.system)}: the file was used with {recorded!r}, this run resolves {target.identity!r} {why}"


def current_bindings(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    con.execute(DDL)
    return dict(
        con.execute("SELECT system, identity FROM pipeline.bindings WHERE replaced_at IS NULL").fetchall()
    )


BINDINGS_KEY = dg.AssetKey(["pipeline", "bindings"])


def build_bindings_asset(systems: list[str]) -> dg.AssetsDefinition:
    """The first step of every job: resolve the run's targets and check them against the file, before extraction.

    `systems`: Metronome and every destination some segment routes to (only those need credentials)."""

    @dg.asset(
        key=BINDINGS_KEY,
        group_name="source",
        kinds={"duckdb"},
        pool="duckdb",
        description="Which Metronome tenant and destination accounts this DuckDB file belongs to (pipeline.bindings). "
        "Runs first: a run whose targets differ from the recorded ones fails here, before extracting or sending.",
        metadata={"dagster/table_name": "pipeline.bindings"},
    )
    def _asset(context: dg.AssetExecutionContext, duckdb: DuckDBWarehouse) -> dg.MaterializeResult:
        try:
            targets = resolve(systems)
            with duckdb.connect() as con:
                verify_bindings(con, targets, duckdb.resolved_path(), context.log.info)
        except ConfigError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        for target in targets:
            context.log.info(f"{target.describe()} ({retention_env()})")
        return dg.MaterializeResult(
            metadata={"environment": retention_env(), **{t.system: t.identity for t in targets}}
        )

    return _asset
