"""Renders docs/configuration.md from `config.SETTINGS`: `python -m retention_pipeline.configdoc > docs/configuration.md`
(`make docs`). retention_pipeline_tests/test_docs.py fails when the page and this output differ.

Imports only `config` (no Dagster), so the page can be rebuilt in a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from retention_pipeline.config import SETTINGS, Setting


@dataclass(frozen=True)
class Group:
    title: str
    anchor: str  # the heading's GitHub anchor, linked from the table of contents
    purpose: str
    names: tuple[str, ...]


# Settings are listed in this order; a setting in no group still appears, under "Other settings".
GROUPS = (
    Group(
        "Environment and targets",
        "environment-and-targets",
        "Which systems a run may reach, and the switches that guard against reaching the wrong ones. See "
        "[Connecting the real services](connecting.md) and [What it guarantees](reference.md#what-it-guarantees).",
        ("RETENTION_ENV", "RETENTION_ALLOW_TARGET_CHANGE", "RETENTION_FIRST_RUN", "RETENTION_DRY_RUN"),
    ),
    Group(
        "Files",
        "files",
        "Where the pipeline writes. See [The analysts' copy](operating.md#the-analysts-copy).",
        (
            "RETENTION_DUCKDB_PATH",
            "RETENTION_PUBLISHED_PATH",
            "RETENTION_PUBLISHED_MODE",
            "RETENTION_PUBLISH_CONTACTS",
            "RETENTION_EXPORT_DIR",
        ),
    ),
    Group(
        "Metronome source",
        "metronome-source",
        "The billing data. See [Extraction](reference.md#extraction-schema-raw) and "
        "[Metronome](connecting.md#metronome).",
        (
            "METRONOME_BEARER_TOKEN",
            "METRONOME_API_URL",
            "RETENTION_USAGE_LOOKBACK_DAYS",
            "RETENTION_HISTORY_DAYS",
            "RETENTION_HOURLY_HISTORY_DAYS",
            "RETENTION_METRONOME_CONCURRENCY",
            "RETENTION_METRONOME_MAX_RETRIES",
            "RETENTION_METRONOME_TIMEOUT_S",
        ),
    ),
    Group(
        "Contacts",
        "contacts",
        "The people behind each Metronome customer. See [Contacts](connecting.md#contacts).",
        ("RETENTION_CONTACTS_PATH", "RETENTION_DEFAULT_PHONE_REGION"),
    ),
    Group(
        "Features and measurement",
        "features-and-measurement",
        "Inputs of the SQL models. See [SQL models](reference.md#sql-models-dbt_like_sql) and "
        "[Measurement](reference.md#measurement).",
        (
            "RETENTION_ACTIVITY_METRIC",
            "RETENTION_ATTRIBUTION_DAYS",
            "RETENTION_LIFT_WINDOW_DAYS",
            "RETENTION_RUN_HISTORY_DAYS",
        ),
    ),
    Group(
        "All destinations",
        "all-destinations",
        "Shared by every destination's sync. See [Activation](activation.md).",
        ("RETENTION_DESTINATIONS_CONFIG", "RETENTION_DESTINATION_TIMEOUT_S", "RETENTION_COVERAGE_MIN_PCT"),
    ),
    Group(
        "Customer.io",
        "customerio",
        "Unset site id and API key: the embedded Customer.io sandbox. See [Customer.io](connecting.md#customerio).",
        (
            "CUSTOMERIO_SITE_ID",
            "CUSTOMERIO_API_KEY",
            "CUSTOMERIO_APP_API_KEY",
            "CUSTOMERIO_REGION",
            "CUSTOMERIO_TRACK_URL",
            "CUSTOMERIO_APP_URL",
            "CUSTOMERIO_REQUESTS_PER_SECOND",
        ),
    ),
    Group(
        "Meta",
        "meta",
        "Unset token and ad account: the embedded Meta sandbox. See [Meta](connecting.md#meta-custom-audiences).",
        ("META_ACCESS_TOKEN", "META_AD_ACCOUNT_ID", "META_GRAPH_URL"),
    ),
    Group(
        "Google",
        "google",
        "Unset token: the embedded Google Data Manager sandbox. See "
        "[Google](connecting.md#google-customer-match-data-manager).",
        ("GOOGLE_ACCESS_TOKEN", "GOOGLE_DATA_MANAGER_URL"),
    ),
    Group(
        "TikTok",
        "tiktok",
        "Unset token and advertiser: the embedded TikTok sandbox. See [TikTok](connecting.md#tiktok).",
        ("TIKTOK_ACCESS_TOKEN", "TIKTOK_ADVERTISER_ID", "TIKTOK_API_URL", "TIKTOK_BATCH_ROWS"),
    ),
    Group(
        "Pinterest",
        "pinterest",
        "Unset token and ad account: the embedded Pinterest sandbox. See [Pinterest](connecting.md#pinterest).",
        ("PINTEREST_ACCESS_TOKEN", "PINTEREST_AD_ACCOUNT_ID", "PINTEREST_API_URL", "PINTEREST_BATCH_RECORDS"),
    ),
    Group(
        "Metronome notifications",
        "metronome-notifications",
        "The webhook receiver and its inbox. See [Metronome notifications](operating.md#metronome-notifications).",
        ("METRONOME_WEBHOOK_SECRET", "RETENTION_WEBHOOK_INBOX", "RETENTION_WEBHOOK_MAX_BODY_BYTES"),
    ),
    Group(
        "Churn model",
        "churn-model",
        "The weekly churn model and its daily scores. See [The churn-risk model](churn-model.md).",
        (
            "RETENTION_CHURN_TRAINING_DAYS",
            "RETENTION_CHURN_MIN_LABELLED_DAYS",
            "RETENTION_CHURN_MIN_POSITIVES",
            "RETENTION_CHURN_MAX_TRAINING_ROWS",
            "RETENTION_CHURN_MEMORY_LIMIT",
            "RETENTION_CHURN_HIGH_RISK",
            "RETENTION_CHURN_MEDIUM_RISK",
        ),
    ),
    Group(
        "Sandbox tenant",
        "sandbox-tenant",
        "The synthetic Metronome tenant used without `METRONOME_BEARER_TOKEN`. See "
        "[The sandbox tenant](getting-started.md#the-sandbox-tenant).",
        ("RETENTION_SANDBOX_NOW", "RETENTION_SANDBOX_CUSTOMERS", "RETENTION_SANDBOX_SEED"),
    ),
)
OTHER = Group("Other settings", "other-settings", "Settings not yet placed in a group above.", ())

# What a one-line `Setting.help` leaves out: limits, consequences and hints worth a reader's time.
DETAILS = {
    "METRONOME_API_URL": "Point it at any Metronome-compatible server (e.g. the sandbox on loopback). A token with "
    "an unreachable URL fails before extraction starts.",
    "RETENTION_ENV": "In production a missing credential for Metronome, or for a destination some segment routes "
    "to, fails the run naming the variable.",
    "RETENTION_ALLOW_TARGET_CHANGE": "Without it, a run whose targets differ from `pipeline.bindings` fails before "
    "extraction; the new target then receives everyone.",
    "RETENTION_DRY_RUN": "Same as the sync assets' launchpad config `dry_run: true`.",
    "RETENTION_DUCKDB_PATH": "Its folder is created on demand (`data/` is git-ignored).",
    "RETENTION_CONTACTS_PATH": "Empty cells are allowed. With the real API and no CSV, no people are loaded (a "
    "warning says so).",
    "RETENTION_USAGE_LOOKBACK_DAYS": "Metronome accepts usage backdated up to 34 days, so 34 is the maximum.",
    "RETENTION_HISTORY_DAYS": "Only on an empty file: later runs extract their partition plus the lookback.",
    "RETENTION_HOURLY_HISTORY_DAYS": "Hourly features need 14 days at hour resolution, so keep it at 15 or more.",
    "RETENTION_METRONOME_MAX_RETRIES": "429 waits `Retry-After` (at most 60 s); 5xx and timeouts back off with "
    "jitter (at most 8 s); then the run fails naming the endpoint.",
    "RETENTION_PUBLISHED_MODE": "Set before the atomic rename, whatever the umask.",
    "RETENTION_PUBLISH_CONTACTS": "The hashed copy is a new file (no raw value survives in free blocks) and needs "
    "twice the file's size on disk while it is built.",
    "RETENTION_DESTINATION_TIMEOUT_S": "Range (0, 600]. A timed-out request is retried; a batch applied whose answer "
    "was lost is absorbed by event ids and idempotent membership calls.",
    "RETENTION_DESTINATIONS_CONFIG": "Maps each segment to its object in each destination (audience, list, manual "
    "segment), the neutral names vendors see, and lookalikes; objects without an id are created on the first sync.",
    "CUSTOMERIO_REGION": "A region that disagrees with the workspace's own fails the run before sending.",
    "META_GRAPH_URL": "Must end with a pinned version (`/v25.0`).",
    "GOOGLE_ACCESS_TOKEN": "Not probed at setup: a bad token fails the first Google request.",
    "RETENTION_SANDBOX_NOW": "`make run` then uses it as now, so demos and tests are reproducible.",
    "RETENTION_SANDBOX_SEED": "Same seed and same clock day: the same tenant.",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(setting: Setting) -> str:
    default = "unset" if setting.default is None else f"`{setting.default}`"
    description = setting.help + (" " + DETAILS[setting.name] if setting.name in DETAILS else "")
    return f"| `{setting.name}` | {_cell(default)} | {_cell(description)} |"


def grouped() -> list[tuple[Group, list[Setting]]]:
    """Each group with the settings that exist, in order; settings in no group at the end under OTHER."""
    placed = {name for group in GROUPS for name in group.names}
    groups = [(g, [SETTINGS[n] for n in g.names if n in SETTINGS]) for g in GROUPS]
    groups.append((OTHER, [s for name, s in SETTINGS.items() if name not in placed]))
    return [(group, settings) for group, settings in groups if settings]


def render() -> str:
    sections = grouped()
    lines = [
        "# Configuration reference",
        "",
        "Every environment variable the pipeline reads, with its default and what it does. All of them are read at "
        "run time (nothing at import), a bad value fails the run immediately with a message naming the variable, "
        "and secrets are never logged. Most people need none of them: `make run` works with nothing set.",
        "",
        "*Generated from `retention_pipeline.config.SETTINGS` by `make docs` "
        "(`python -m retention_pipeline.configdoc > docs/configuration.md`); edit the settings, not this page "
        "(retention_pipeline_tests/test_docs.py fails when it drifts).*",
        "",
        "**Contents:** " + " · ".join(f"[{group.title}](#{group.anchor})" for group, _ in sections),
        "",
    ]
    for group, settings in sections:
        lines += [f"## {group.title}", "", group.purpose, "", "| Variable | Default | Description |"]
        lines += ["|---|---|---|", *(_row(s) for s in settings), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
