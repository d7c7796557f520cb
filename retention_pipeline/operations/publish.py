"""A read-only copy of the DuckDB file for analysts, refreshed atomically at the end of every job.

DuckDB allows one writer process and no readers while it writes, so analysts never open the live file: they open
the published copy, which is replaced in one `rename` (readers holding the old copy keep it until they reconnect).
The copy holds every contact's email and phone, so it is built in a private folder beside the target and gets
RETENTION_PUBLISHED_MODE (owner-only by default) before the rename: it is never readable by others unless
configured. RETENTION_PUBLISH_CONTACTS=hashed publishes SHA-256 hashes instead of emails and phones.
"""

import os
import re
import shutil
import time
from pathlib import Path

import dagster as dg
import duckdb

from retention_pipeline import catalog
from retention_pipeline.config import ConfigError, env
from retention_pipeline.destinations.identity import sha256_hex
from retention_pipeline.paths import published_path
from retention_pipeline.warehouse import DuckDBWarehouse

KEY = dg.AssetKey(["operations", "published_copy"])
CONTACT_MODES = ("raw", "hashed")

# raw.contacts, hashed column by column: emails as normalized (the hash Meta and Customer.io payloads use), phones
# as E.164 with '+' (Google's). A value that did not normalize is hashed as written, so it stays countable.
HASH_CONTACTS_SQL = """
UPDATE raw.contacts SET
    email = sha256(coalesce(email_normalized, email)),
    email_normalized = sha256(email_normalized),
    phone = sha256(coalesce(phone_e164, phone)),
    phone_e164 = sha256(phone_e164)
"""
# Any other text: an email-shaped run (Metronome ingest aliases, custom fields, the `raw` JSON, Customer.io
# payloads) or an E.164 number. Quotes and backslashes end a match, so JSON text stays valid after replacement.
IDENTIFIER = re.compile(
    r"[A-Za-z0-9._%+'!#$&*/=?^`{|}~\u0080-\uffff-]+@[A-Za-z0-9\u0080-\uffff-]+(?:\.[A-Za-z0-9\u0080-\uffff-]+)+"
    r"|\+[1-9][0-9]{6,14}(?![0-9])"
)
IDENTIFIER_SQL_FILTER = r"contains({text}, '@') OR regexp_matches({text}, '\+[1-9][0-9]{{6}}')"


def published_mode(override: str | None = None) -> int:
    """RETENTION_PUBLISHED_MODE as a permission mode; the owner must keep read access to query it."""
    raw = env("RETENTION_PUBLISHED_MODE", override)
    try:
        mode = int(raw, 8)
    except ValueError:
        mode = -1
    if not 0o400 <= mode <= 0o777:
        raise ConfigError(
            f"RETENTION_PUBLISHED_MODE={raw!r} is not an octal file mode from 0400 to 0777 (e.g. 0600, 0640)."
        )
    return mode


def publishes_hashed_contacts(override: str | None = None) -> bool:
    raw = env("RETENTION_PUBLISH_CONTACTS", override)
    if raw.lower() not in CONTACT_MODES:
        raise ConfigError(f"RETENTION_PUBLISH_CONTACTS={raw!r} must be one of {', '.join(CONTACT_MODES)}.")
    return raw.lower() == "hashed"


def publish(warehouse: DuckDBWarehouse, target: Path, mode: int = 0o600, hash_contacts: bool = False) -> int:
    """Snapshot the working file into a private folder, hash contacts if asked, set the mode, rename into place.

    Every failure removes the folder and re-raises the original error with a note naming the setting, so a full
    disk neither leaves partial copies behind nor hides behind a later error."""
    _remove_abandoned(target)
    work = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        work.mkdir(mode=0o700)  # a umask can only take bits away: private whatever it is
        snapshot = work / "snapshot.duckdb"
        _snapshot(warehouse, snapshot)
        final = _hashed_copy(snapshot, work / "hashed.duckdb") if hash_contacts else snapshot
        os.chmod(final, mode)
        os.replace(final, target)
    except BaseException as exc:
        exc.add_note(f"publishing the analysts' copy to RETENTION_PUBLISHED_PATH={str(target)!r} failed")
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target.stat().st_size


def _snapshot(warehouse: DuckDBWarehouse, snapshot: Path) -> None:
    """Checkpoint, then copy the file bytes while holding the write lock (no writer can interleave).

    A CHECKPOINT that fails (a full disk) invalidates the database in this process until its last connection
    closes; `warehouse.connect()` closes it on any exit, so later runs in the process are not poisoned."""
    with warehouse.connect() as con:
        try:
            con.execute("CHECKPOINT")
        except duckdb.Error as exc:
            exc.add_note(f"CHECKPOINT of RETENTION_DUCKDB_PATH={str(warehouse.resolved_path())!r} failed")
            raise
        shutil.copyfile(warehouse.resolved_path(), snapshot)


def _hashed_copy(snapshot: Path, hashed: Path) -> Path:
    """Hash identifiers in the snapshot, then copy its live rows to a new file.

    The new file matters: DuckDB rewrites values in new blocks and leaves the old ones in the file, so a snapshot
    hashed in place would still hold every raw email for anyone reading its bytes."""
    with duckdb.connect(str(snapshot)) as con:
        if con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw' AND table_name = 'contacts'"
        ).fetchone()[0]:
            con.execute(HASH_CONTACTS_SQL)
        columns = con.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = current_database() AND NOT internal "
            "AND (data_type LIKE '%VARCHAR%' OR data_type LIKE '%JSON%') "
            "AND table_oid IN (SELECT table_oid FROM duckdb_tables() WHERE NOT temporary)"
        ).fetchall()
        for schema, table, column, data_type in columns:
            _hash_identifiers(con, f"{_quote(schema)}.{_quote(table)}", _quote(column), data_type)
        con.execute(f"ATTACH '{str(hashed).replace(chr(39), chr(39) * 2)}' AS hashed")
        con.execute("COPY FROM DATABASE snapshot TO hashed")
        con.execute("DETACH hashed")
    return hashed


def _hash_identifiers(con: duckdb.DuckDBPyConnection, table: str, column: str, data_type: str) -> None:
    """Replace every email- or E.164-shaped run in one column by its SHA-256 (emails lowercased first).

    Nested values (lists, structs, JSON) are rewritten through their JSON text and cast back to the column type."""
    plain = data_type == "VARCHAR"
    text = f"t.{column}" if plain else f"CAST(to_json(t.{column}) AS VARCHAR)"
    found = con.execute(
        f"SELECT DISTINCT {text} FROM {table} AS t WHERE {IDENTIFIER_SQL_FILTER.format(text=text)}"
    ).fetchall()
    changes = {old: IDENTIFIER.sub(_hash_match, old) for (old,) in found}
    changes = {old: new for old, new in changes.items() if new != old}
    if not changes:
        return
    value = "m.new" if plain else f"CAST(CAST(m.new AS JSON) AS {data_type})"
    con.execute(
        f"UPDATE {table} AS t SET {column} = {value} "
        "FROM (SELECT unnest(?::VARCHAR[]) AS old, unnest(?::VARCHAR[]) AS new) AS m "
        f"WHERE {text} = m.old",
        [list(changes), list(changes.values())],
    )


def _hash_match(match: re.Match) -> str:
    """The hex digest DuckDB's sha256() gives, of the email lowercased or of the phone as found."""
    value = match.group()
    return sha256_hex(value.lower() if "@" in value else value)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _remove_abandoned(target: Path) -> None:
    """Temp folders (and the temp files of earlier versions) left by publishes whose process died (kill -9)."""
    prefix = f".{target.name}."
    for path in target.parent.iterdir():
        pid = path.name[len(prefix) : -len(".tmp")]
        if path.name.startswith(prefix) and path.name.endswith(".tmp") and pid.isdigit():
            if int(pid) != os.getpid() and _alive(int(pid)):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


@dg.asset(
    key=KEY,
    # Every sync and every unpartitioned model too: a leaf model no other asset reads (analytics.customers) must land
    # first. Partitioned models and segments are upstream of the syncs already.
    deps=[
        d.key
        for d in catalog.upstream_of("operations").declarations
        if d.stage == "destinations" or (d.stage in ("models", "measurement") and d.cadence is None)
    ],
    group_name="operations",
    kinds={"duckdb"},
    pool="duckdb",
    description="A consistent, read-only copy of the DuckDB file (RETENTION_PUBLISHED_PATH) that analysts query "
    "while jobs write; replaced atomically after each run, owner-only unless RETENTION_PUBLISHED_MODE says "
    "otherwise, contacts hashed with RETENTION_PUBLISH_CONTACTS=hashed.",
)
def published_copy(context: dg.AssetExecutionContext, duckdb: DuckDBWarehouse) -> dg.MaterializeResult:
    started = time.monotonic()
    target, mode, hashed = published_path(), published_mode(), publishes_hashed_contacts()
    size = publish(duckdb, target, mode, hashed)
    contacts = "hashed" if hashed else "raw"
    context.log.info(f"published {size / 1e6:.1f} MB to {target} (mode {mode:04o}, contacts {contacts})")
    return dg.MaterializeResult(
        metadata={
            "path": str(target),
            "bytes": size,
            "seconds": round(time.monotonic() - started, 2),
            "mode": f"{mode:04o}",
            "contacts": contacts,
        }
    )


defs = dg.Definitions(assets=[published_copy])
