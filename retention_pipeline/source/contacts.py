"""People per Metronome customer (accounts live in Metronome; people live in a CSV or the sandbox).

Every input row ends up somewhere visible: in `raw.contacts` (with `issues` for an unusable email/phone/consent) or
in `raw.contacts_rejected` (with the reason). Bad rows never crash the run and are never dropped silently.

An email that cannot be an address is an identifier issue, not a rejection: the person stays (their phone and
consent may be fine), the issue names why (`unsafe_email` for a spreadsheet formula, `invalid_email` otherwise) and
the value itself is not stored (`email` and `email_normalized` NULL). The sync takes identifiers from this table
only, so what was refused here can never reach a destination, and a formula never sits in a table someone exports
to a spreadsheet.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import phonenumbers
from pydantic import Field

from retention_pipeline.config import ConfigError, env
from retention_pipeline.source.tables import CONTACTS_REJECTED_TABLE, CONTACTS_TABLE
from retention_pipeline.warehouse import transaction

REQUIRED_COLUMNS = ("customer_id", "person_id", "email", "phone", "marketing_consent")
MAX_FIELD_CHARS = 1_000_000  # a longer field is a broken file, reported as a malformed row
# Shaped like an address (deliverability is the ESP's job): at most 254 characters; a local part of at most 64
# without whitespace, control characters, quotes, parentheses, commas, colons, semicolons, brackets, backslashes or
# undecodable bytes (U+FFFD) (quoted local parts are legal but are not how customers write their address); a domain
# of letter/digit labels, hyphens inside, the last one starting with a letter.
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
EMAIL_PATTERN = (
    r"(?=.{3,254}$)"
    r"[^\s\x00-\x1f\x7f\"(),:;<>@\[\]\\\ufeff\ufffd]{1,64}"
    rf"@(?:{_LABEL}\.)+(?=[^\W\d_]){_LABEL}"
)
# A leading = + - @ makes a spreadsheet evaluate the cell (CSV/formula injection): never an address we send.
FORMULA_PREFIX = r"[=+\-@]"
_CONSENT = {"true": True, "t": True, "yes": True, "y": True, "1": True,
            "false": False, "f": False, "no": False, "n": False, "0": False, "": False}  # fmt: skip


class ContactsResource(dg.ConfigurableResource):
    """Where people come from: the CSV at RETENTION_CONTACTS_PATH, else the sandbox tenant's generated people."""

    path: str | None = Field(default=None, description="Overrides RETENTION_CONTACTS_PATH.")
    default_phone_region: str | None = Field(
        default=None, description="Overrides RETENTION_DEFAULT_PHONE_REGION."
    )

    def csv_path(self) -> Path | None:
        raw = env("RETENTION_CONTACTS_PATH", self.path)
        if raw is None:
            return None
        path = Path(raw).expanduser()
        if not path.is_file():
            raise ConfigError(f"RETENTION_CONTACTS_PATH={raw!r} does not name a readable file.")
        return path

    def phone_region(self) -> str:
        region = env("RETENTION_DEFAULT_PHONE_REGION", self.default_phone_region).upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(
                f"RETENTION_DEFAULT_PHONE_REGION={region!r} is not a known region code (e.g. US, DE)."
            )
        return region


@dataclass
class ContactsLoad:
    rows_in: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    issues: dict[str, int] = field(default_factory=dict)


def read_contacts_csv(path: Path) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """The CSV as strings plus (line, reason) for rows that are not parseable CSV records.

    Undecodable bytes are replaced rather than failing the whole file; the affected values then fail validation."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ConfigError(
            f"RETENTION_CONTACTS_PATH={str(path)!r} is empty (expected a header row)."
        ) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ConfigError(
            f"RETENTION_CONTACTS_PATH={str(path)!r} lacks column(s) {', '.join(missing)}; "
            f"expected {', '.join(REQUIRED_COLUMNS)}."
        )
    positions = [header.index(c) for c in REQUIRED_COLUMNS]
    good, malformed = [], []
    first_line = reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a field over the size limit: report the line, keep reading
            malformed.append((reader.line_num, f"malformed_row ({exc})"))
            first_line = reader.line_num + 1
            continue
        lines = range(first_line, reader.line_num + 1)  # a quoted field can span several physical lines
        first_line = reader.line_num + 1
        if not record or all(not v.strip() for v in record):
            continue
        if len(record) != len(header):
            # An unclosed quote swallows the lines after it: every one of them is reported, none vanishes.
            malformed += [
                (line, f"malformed_row ({len(record)} fields, header has {len(header)})") for line in lines
            ]
            continue
        good.append([lines[0]] + [record[p] for p in positions])
    return pd.DataFrame(good, columns=["source_row", *REQUIRED_COLUMNS]), malformed


def empty_contacts_frame() -> pd.DataFrame:
    return pd.DataFrame(columns=["source_row", *REQUIRED_COLUMNS])


@lru_cache(maxsize=200_000)
def to_e164(raw: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def validate_contacts(
    frame: pd.DataFrame, known_customers: set[str], region: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into (accepted people with normalized identifiers and issues, rejected rows with a reason)."""
    df = frame.copy()
    for col in REQUIRED_COLUMNS:
        df[col] = df[col].fillna("").astype(str).str.strip()
    reason = pd.Series("", index=df.index)
    reason[df["customer_id"] == ""] = "missing_customer_id"
    reason[(reason == "") & (df["person_id"] == "")] = "missing_person_id"
    reason[(reason == "") & ~df["customer_id"].isin(known_customers)] = "unknown_customer"
    duplicate = df.duplicated(["customer_id", "person_id"], keep="first")
    reason[(reason == "") & duplicate] = "duplicate_person"
    rejected = df.loc[reason != "", ["source_row", "customer_id", "person_id"]].assign(
        reason=reason[reason != ""]
    )
    ok = df.loc[reason == ""].copy()

    unsafe = ok["email"].str.match(FORMULA_PREFIX)
    email_valid = ok["email"].str.fullmatch(EMAIL_PATTERN) & ~unsafe
    ok["email_normalized"] = ok["email"].str.lower().where(email_valid)
    ok["phone_e164"] = [to_e164(p, region) if p else None for p in ok["phone"]]
    consent = ok["marketing_consent"].str.lower().map(_CONSENT)
    checks = {
        "unsafe_email": unsafe,
        "invalid_email": (ok["email"] != "") & ~email_valid & ~unsafe,
        "invalid_phone": (ok["phone"] != "") & ok["phone_e164"].isna(),
        "invalid_consent": consent.isna(),
    }
    ok["issues"] = [
        [name for name, bad in zip(checks, flags, strict=True) if bad]
        for flags in zip(*checks.values(), strict=True)
    ]
    # An unreadable consent value is treated as no consent: never market to someone we cannot prove opted in.
    ok["marketing_consent"] = consent.fillna(False).astype(bool)
    ok["email"] = ok["email"].where(email_valid, None)
    ok["phone"] = ok["phone"].replace("", None)
    return ok, rejected


def write_contacts(con: duckdb.DuckDBPyConnection, accepted: pd.DataFrame, rejected: pd.DataFrame) -> None:
    loaded_at = datetime.now(UTC).replace(tzinfo=None)
    con.register("contacts_in", accepted)
    con.register("contacts_rejected_in", rejected)
    try:
        with transaction(con):
            con.execute(f"DELETE FROM {CONTACTS_TABLE}")
            con.execute(
                f"""INSERT INTO {CONTACTS_TABLE}
                SELECT customer_id, person_id, email, email_normalized, phone, phone_e164, marketing_consent,
                       CAST(issues AS VARCHAR[]), source_row, ? FROM contacts_in""",
                [loaded_at],
            )
            con.execute(f"DELETE FROM {CONTACTS_REJECTED_TABLE}")
            con.execute(
                f"""INSERT INTO {CONTACTS_REJECTED_TABLE}
                SELECT source_row, nullif(customer_id, ''), nullif(person_id, ''), reason, ? FROM contacts_rejected_in""",
                [loaded_at],
            )
    finally:
        con.unregister("contacts_in")
        con.unregister("contacts_rejected_in")


def load_contacts(
    con: duckdb.DuckDBPyConnection, frame: pd.DataFrame, malformed: list[tuple[int, str]], region: str
) -> ContactsLoad:
    """Validate against the customers already in raw.metronome_customers and replace both contact tables."""
    known = {r[0] for r in con.execute("SELECT id FROM raw.metronome_customers").fetchall()}
    accepted, rejected = validate_contacts(frame, known, region)
    if malformed:
        extra = pd.DataFrame(
            [(line, "", "", reason.split(" ")[0]) for line, reason in malformed],
            columns=["source_row", "customer_id", "person_id", "reason"],
        )
        rejected = pd.concat([rejected, extra], ignore_index=True)
    write_contacts(con, accepted, rejected)
    issue_counts = pd.Series(
        [i for issues in accepted["issues"] for i in issues], dtype="string"
    ).value_counts()
    return ContactsLoad(
        rows_in=len(frame) + len(malformed),
        accepted=len(accepted),
        rejected={k: int(v) for k, v in rejected["reason"].value_counts().items()},
        issues={k: int(v) for k, v in issue_counts.items()},
    )
