"""Bad input: broken segment and model files, a contacts CSV with broken rows and encodings, absurd env values.

What must hold: the pipeline either copes (every CSV row ends up in raw.contacts or raw.contacts_rejected) or
fails with a message that names what to fix (the file and table or field; the env var). Model and segment files
are checked with the loaders the definitions use, on a copy of dbt_like_sql/ with one file broken.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reliability.report import Row
from reliability.workspace import (
    ACTIVATION_HISTORY_DAYS,
    DAY,
    REPO,
    SYNC_DAILY,
    Suite,
    Workspace,
    child_env,
)
from retention_pipeline.models.project import SQL_ROOT, ModelError, load_project
from retention_pipeline.segments.project import SegmentError, load_segment, load_segments

GROUP = "Bad input"
CONTACTS_SELECTION = [["raw", "metronome_customers"], ["raw", "contacts"]]


# --- model and segment files --------------------------------------------------------------------------------


def _project_copy(tmp: Path) -> Path:
    root = tmp / "dbt_like_sql"
    shutil.copytree(SQL_ROOT, root)
    return root


def _known_tables() -> set[str]:
    from retention_pipeline.models.assets import table_producers
    from retention_pipeline.models.definitions import defs as model_defs
    from retention_pipeline.source.definitions import defs as source_defs

    return set(table_producers([*source_defs.assets, *model_defs.assets]))


def _raw_tables() -> set[str]:
    from retention_pipeline.models.assets import table_producers
    from retention_pipeline.source.definitions import defs as source_defs

    return set(table_producers(source_defs.assets))


@dataclass
class FileCase:
    name: str
    kind: str  # "model" or "segment"
    path: str  # relative to dbt_like_sql/
    text: str
    must_name: tuple[str, ...]


FILE_CASES = [
    FileCase("segment SQL does not parse", "segment", "segments/broken.sql",
             "/*\ndescription: x\ncadence: daily\n*/\nSELECT customer_id FROM features WHERE (", ("broken.sql", "parse")),
    FileCase("segment cadence: monthly", "segment", "segments/broken.sql",
             "/*\ndescription: x\ncadence: monthly\n*/\nSELECT customer_id FROM features", ("broken.sql", "cadence")),
    FileCase("segment header is not YAML", "segment", "segments/broken.sql",
             "/*\ndescription: [x\ncadence: daily\n*/\nSELECT customer_id FROM features", ("broken.sql", "YAML")),
    FileCase("segment unknown field", "segment", "segments/broken.sql",
             "/*\ndescription: x\ncadence: daily\ncolour: red\n*/\nSELECT customer_id FROM features",
             ("broken.sql", "colour")),
    FileCase("segment {{ param }} without a value", "segment", "segments/broken.sql",
             "/*\ndescription: x\ncadence: daily\n*/\nSELECT customer_id FROM features WHERE usage_7d > {{ floor }}",
             ("broken.sql", "floor")),
    FileCase("segment excludes an unknown segment", "segment", "segments/broken.sql",
             "/*\ndescription: x\ncadence: daily\nexclude: [ghost]\n*/\nSELECT customer_id FROM features",
             ("broken.sql", "ghost")),
    FileCase("segment reads an unknown table", "segment", "segments/broken.sql",
             "/*\ndescription: x\ncadence: daily\n*/\nSELECT customer_id FROM raw.nope", ("broken.sql", "raw.nope")),
    FileCase("segment injects SQL through a param", "segment", "segments/broken.sql",
             "/*\ndescription: x\ncadence: daily\nparams: {floor: '1; DROP TABLE raw.contacts'}\n*/\n"
             "SELECT customer_id FROM features WHERE usage_7d > {{ floor }}", ("broken.sql", "params.floor")),
    FileCase("model cycle", "model", "staging/stg_usage.sql",
             "SELECT * FROM analytics.usage_daily", ("cycle", "stg_usage.sql", "usage_daily.sql")),
    FileCase("model reads an unknown table", "model", "staging/stg_extra.sql",
             "SELECT * FROM raw.metronome_nope", ("stg_extra.sql", "raw.metronome_nope")),
    FileCase("model SQL does not parse", "model", "staging/stg_extra.sql", "SELECT FROM WHERE ((",
             ("stg_extra.sql", "parse")),
    FileCase("model is two statements", "model", "staging/stg_extra.sql",
             "SELECT 1 AS id; DROP TABLE raw.contacts", ("stg_extra.sql",)),
    FileCase("model header: materialized: snapshot", "model", "staging/stg_extra.sql",
             "/*\nmaterialized: snapshot\n*/\nSELECT 1 AS id", ("stg_extra.sql", "materialized")),
    FileCase("model test kind unknown", "model", "staging/stg_extra.sql",
             "/*\ntests:\n  - unique_ish: id\n*/\nSELECT 1 AS id", ("stg_extra.sql", "unique_ish")),
]  # fmt: skip


def _load(case: FileCase, root: Path) -> None:
    if case.kind == "segment":
        load_segments(root / "segments", known_tables=_known_tables())
    else:
        load_project(root, _raw_tables())


def files(suite: Suite) -> list[Row]:
    rows = {
        "segment": Row(GROUP, "malformed segment SQL / config (definitions load)"),
        "model": Row(GROUP, "model cycle, unknown table, malformed model SQL/header (definitions load)"),
    }
    for case in FILE_CASES:
        row = rows[case.kind]
        row.injections += 1
        with tempfile.TemporaryDirectory() as tmp:
            root = _project_copy(Path(tmp))
            (root / case.path).write_text(case.text)
            try:
                _load(case, root)
            except (ModelError, SegmentError) as error:
                message = str(error)
                named = all(n.lower() in message.lower() for n in case.must_name)
                row.case(named, message=None if named else f"{case.name}: {message[:200]}")
            except Exception as error:  # noqa: BLE001 - an unexpected exception type is itself the finding
                row.case(False, message=f"{case.name}: {type(error).__name__}: {str(error)[:200]}")
            else:
                row.case(False, message=f"{case.name}: loaded without an error")
    rows["segment"].note("each fails definitions load naming the file and field/table")
    rows["model"].note("each fails definitions load naming the file (and table)")
    runtime = _segment_runtime_error()
    rows["segment"].injections += 1
    rows["segment"].case(runtime[0], message=runtime[1])
    rows["segment"].note("a segment whose SQL binds wrong at run time fails naming the segment")
    return list(rows.values())


def _segment_runtime_error() -> tuple[bool, str | None]:
    """SQL that parses but reads a column `features` does not have: the engine must name the segment."""
    from retention_pipeline.segments.engine import SegmentRunError
    from retention_pipeline.segments.fixtures import fixture_files, run_fixture

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "usage_drop_wow.sql"
        path.write_text(
            "/*\ndescription: x\ncadence: daily\n*/\nSELECT customer_id FROM features WHERE no_such_col > 1"
        )
        broken = load_segment(path)
        segments = [broken if s.name == broken.name else s for s in load_segments()]
        try:
            run_fixture(fixture_files()[0], segments)
        except SegmentRunError as error:
            return "usage_drop_wow" in str(error), None if "usage_drop_wow" in str(error) else str(error)[
                :200
            ]
        except Exception as error:  # noqa: BLE001
            return False, f"{type(error).__name__}: {str(error)[:200]}"
    return False, "a segment reading a missing column computed without an error"


# --- contacts CSV ----------------------------------------------------------------------------------------------


@dataclass
class CsvCase:
    name: str
    build: Callable[[list[str]], bytes]  # from the tenant's CSV lines (header first) to the file's bytes
    rows: (
        Callable[[list[str]], int] | None
    )  # data rows the file holds; None: the run must fail naming the var
    quick: bool = False
    finding: str | None = None


def _lines(data: list[str], sep: str = "\n") -> bytes:
    return (sep.join(data) + sep).encode()


def _latin1(lines: list[str]) -> bytes:
    out = bytearray()
    for i, line in enumerate(lines):
        if 0 < i <= 3:
            parts = line.split(",")
            parts[2] = f"jos\xe9{i}@example.com"
            out += ",".join(parts).encode("latin-1") + b"\n"
        else:
            out += line.encode() + b"\n"
    return bytes(out)


def _ragged(lines: list[str]) -> bytes:
    bad = [lines[1] + ",extra,fields", ",".join(lines[2].split(",")[:3]), "just-one-field"]
    return _lines(lines + bad)


def _unbalanced_quote(lines: list[str]) -> bytes:
    middle = len(lines) // 2
    broken = lines[middle].split(",")
    broken[3] = '"+1 415 555 0100'  # an opening quote that never closes
    return _lines(lines[:middle] + [",".join(broken)] + lines[middle + 1 :])


def _nul(lines: list[str]) -> bytes:
    parts = lines[5].split(",")
    parts[1] = parts[1] + "\x00"
    return _lines(lines[:5] + [",".join(parts)] + lines[6:])


def _huge_field(lines: list[str]) -> bytes:
    parts = lines[4].split(",")
    parts[2] = "x" * 200_000 + "@example.com"
    return _lines(lines[:4] + [",".join(parts)] + lines[5:])


def _blank_lines(lines: list[str]) -> bytes:
    spaced = [lines[0]]
    for line in lines[1:]:
        spaced += [line, "", "   "]
    return _lines(spaced)


def _data_rows(lines: list[str]) -> int:
    return len(lines) - 1


CSV_CASES = [
    CsvCase("latin-1 bytes in 3 emails", _latin1, _data_rows, quick=True),
    CsvCase("UTF-8 BOM and CRLF line ends", lambda ls: "\ufeff".encode() + _lines(ls, "\r\n"), _data_rows),
    CsvCase("3 rows with too many / too few fields", _ragged, lambda ls: len(ls) + 2, quick=True),
    CsvCase("blank and whitespace-only lines between rows", _blank_lines, _data_rows),
    CsvCase("an opening quote that never closes (mid-file)", _unbalanced_quote, _data_rows, finding="F6"),
    CsvCase("a NUL byte in a person_id", _nul, _data_rows),
    CsvCase("a 200 KB email field", _huge_field, _data_rows, finding="F7"),
    CsvCase("whole file UTF-16", lambda ls: "\n".join(ls).encode("utf-16"), None, quick=True),
    CsvCase("empty file", lambda ls: b"", None),
    CsvCase("header without the phone column",
            lambda ls: _lines([ls[0].replace(",phone", "")] + [",".join(r.split(",")[:3] + r.split(",")[4:])
                                                                  for r in ls[1:]]), None),
]  # fmt: skip


def contacts(suite: Suite, quick: bool) -> Row:
    row = Row(GROUP, "contacts CSV with broken rows and encodings")
    lines = suite.contacts_csv.read_text().splitlines()
    for case in CSV_CASES:
        if quick and not case.quick:
            continue
        ws = suite.workspace("bad-contacts")
        path = ws.path / "contacts.csv"
        path.write_bytes(case.build(lines))
        row.injections += 1
        outcome = ws.run(
            "daily_retention", DAY, CONTACTS_SELECTION, env={"RETENTION_CONTACTS_PATH": str(path)}
        )
        if case.rows is None:
            named = not outcome.success and outcome.names("RETENTION_CONTACTS_PATH")
            row.case(
                named,
                message=None if named else f"{case.name}: {outcome.message[:200] or 'run succeeded'}",
                finding=case.finding,
            )
        elif outcome.success:
            expected = case.rows(lines)
            people, rejected = ws.query(
                "SELECT (SELECT count(*) FROM raw.contacts), (SELECT count(*) FROM raw.contacts_rejected)"
            )[0]
            lost = expected - people - rejected
            row.case(lost == 0, lost=max(lost, 0), finding=case.finding,
                     message=None if lost == 0 else f"{case.name}: {expected} rows in, {people} loaded + {rejected} "
                     f"rejected ({lost} unaccounted)")  # fmt: skip
        else:
            named = outcome.names("RETENTION_CONTACTS_PATH") or outcome.names(path.name)
            row.case(named, message=f"{case.name}: failed: {outcome.message[:200]}", finding=case.finding)
        ws.close()
    row.note("every row loaded or rejected with a reason, or the run fails naming RETENTION_CONTACTS_PATH")
    return row


# --- absurd env values ------------------------------------------------------------------------------------------


@dataclass
class EnvCase:
    var: str
    value: str
    target: str  # "extract", "sandbox", "sync", "model", "publish", "webhooks"
    quick: bool = False
    finding: str | None = None
    works_if: Callable[[], bool] | None = None  # an odd but valid value: the run may succeed if this holds


def env_cases(tmp: Path) -> list[EnvCase]:
    (tmp / "a-directory").mkdir(exist_ok=True)
    return [
        EnvCase("RETENTION_METRONOME_TIMEOUT_S", "-5", "extract", quick=True),
        EnvCase("RETENTION_METRONOME_TIMEOUT_S", "soon", "extract"),
        EnvCase("RETENTION_METRONOME_MAX_RETRIES", "1000", "extract"),
        EnvCase("RETENTION_METRONOME_CONCURRENCY", "0", "extract"),
        EnvCase("RETENTION_HISTORY_DAYS", "99999999", "extract"),
        EnvCase("RETENTION_USAGE_LOOKBACK_DAYS", "-1", "extract"),
        EnvCase("RETENTION_DUCKDB_PATH", str(tmp / "a-directory"), "extract"),
        EnvCase("RETENTION_DUCKDB_PATH", str(tmp / "raw.duckdb"), "extract"),
        EnvCase("RETENTION_DEFAULT_PHONE_REGION", "ZZ", "extract"),
        EnvCase("RETENTION_CONTACTS_PATH", str(tmp / "missing.csv"), "extract"),
        EnvCase("METRONOME_API_URL", "ftp://metronome.example", "extract"),
        EnvCase("RETENTION_SANDBOX_NOW", "yesterday", "sandbox"),
        EnvCase("RETENTION_SANDBOX_CUSTOMERS", "-5", "sandbox"),
        EnvCase("RETENTION_DRY_RUN", "perhaps", "sync", quick=True),
        EnvCase("RETENTION_COVERAGE_MIN_PCT", "lots", "sync"),
        EnvCase("RETENTION_DESTINATION_TIMEOUT_S", "0", "sync"),
        EnvCase("CUSTOMERIO_REGION", "mars", "sync"),
        EnvCase("CUSTOMERIO_API_KEY", "", "sync"),  # site id without its key
        EnvCase("META_GRAPH_URL", "https://graph.facebook.com", "sync"),
        EnvCase("TIKTOK_API_URL", "https://business-api.tiktok.com/open_api", "sync"),  # no pinned version
        EnvCase("TIKTOK_BATCH_ROWS", "0", "sync"),
        EnvCase("PINTEREST_AD_ACCOUNT_ID", "my-account", "sync"),
        EnvCase("PINTEREST_BATCH_RECORDS", "lots", "sync"),
        EnvCase("RETENTION_DESTINATIONS_CONFIG", str(tmp / "missing.yaml"), "sync"),
        EnvCase(
            "RETENTION_EXPORT_DIR",
            str(tmp / "o'brien" / "exports"),
            "sync",
            finding="F8",
            works_if=lambda: any((tmp / "o'brien" / "exports").rglob("*.parquet")),
        ),
        EnvCase("RETENTION_EXPORT_DIR", str(tmp / "contacts.csv"), "sync"),  # a file, not a folder
        EnvCase("RETENTION_ATTRIBUTION_DAYS", "-7", "model", quick=True),
        EnvCase("RETENTION_LIFT_WINDOW_DAYS", "a fortnight", "model"),
        EnvCase("RETENTION_PUBLISHED_PATH", "", "publish"),  # set to the DuckDB file itself below
        EnvCase("RETENTION_WEBHOOK_MAX_BODY_BYTES", "10", "webhooks", quick=True),
        EnvCase("METRONOME_WEBHOOK_SECRET", "", "webhooks"),
    ]


def _env_outcome(suite: Suite, ws: Workspace, case: EnvCase) -> tuple[bool, str]:
    """(failed naming the variable, message)."""
    overrides = {case.var: case.value}
    if case.target == "webhooks":
        env = child_env({**ws.env, **({case.var: case.value} if case.value else {})})
        if case.var != "METRONOME_WEBHOOK_SECRET":
            env["METRONOME_WEBHOOK_SECRET"] = "rlb-webhook-secret-Ya3Pf8Dn5C"
        else:
            env.pop(case.var, None)
        process = subprocess.run([sys.executable, "-m", "retention_pipeline.webhooks", "--port", "0"], env=env,
                                 cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
        suite.transcript.add(f"webhooks cli {case.var}", process.stdout + process.stderr)
        return process.returncode != 0 and case.var in process.stderr, process.stderr.strip()[-200:]
    if case.target == "extract":
        outcome = ws.run(
            "daily_retention", DAY, CONTACTS_SELECTION + [["raw", "metronome_usage_daily"]], env=overrides
        )
    elif case.target == "sandbox":
        without_token = {**overrides, "METRONOME_BEARER_TOKEN": "", "METRONOME_API_URL": ""}
        outcome = ws.run("daily_retention", DAY, [["raw", "metronome_customers"]], env=without_token)
    elif case.target == "sync":
        if case.var == "CUSTOMERIO_API_KEY":
            overrides = {"CUSTOMERIO_API_KEY": ""}
        outcome = ws.run("daily_retention", DAY, SYNC_DAILY, env=overrides)
    elif case.target == "model":
        outcome = ws.run("daily_retention", DAY, [["staging", "stg_customers"]], env=overrides)
    else:
        outcome = ws.run("daily_retention", DAY, [["operations", "published_copy"]],
                         env={"RETENTION_PUBLISHED_PATH": ws.env["RETENTION_DUCKDB_PATH"]})  # fmt: skip
    if outcome.success:
        return False, "run succeeded"
    return outcome.names(case.var), outcome.message


def env_values(suite: Suite, quick: bool) -> Row:
    from reliability.scenarios.destinations import prepare_base

    row = Row(GROUP, "absurd env values (each fails naming the variable; odd but valid ones work)")
    prepare_base(suite)
    cases = [c for c in env_cases(suite.root) if c.quick or not quick]
    for case in cases:
        ws = suite.workspace(
            "bad-env", history_days=ACTIVATION_HISTORY_DAYS, destinations=case.target == "sync"
        )
        ws.adopt_db(suite.base_daily)
        row.injections += 1
        named, message = _env_outcome(suite, ws, case)
        if message == "run succeeded" and case.works_if is not None:
            named = case.works_if()
        shown = case.value if len(case.value) < 30 else "…" + case.value[-24:]
        row.case(
            named, message=None if named else f"{case.var}={shown!r}: {message[:220]}", finding=case.finding
        )
        ws.close()
    row.note(f"{len(cases)} values across extraction, sandbox, sync, models, publish and the webhook CLI")
    return row


def scenarios(suite: Suite, quick: bool) -> list[Row]:
    rows = [*files(suite), contacts(suite, quick), env_values(suite, quick)]
    for row in rows:
        suite.progress(row)
    return rows
