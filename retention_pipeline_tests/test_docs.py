"""The docs cannot drift: every shell command in README.md and docs/*.md runs here, names the test that runs it, or is
marked illustrative; docs/configuration.md is what configdoc renders; every env var they name exists; every relative
link resolves; every asset, job, schedule and sensor is named somewhere.

Markers, on the line right before a ```bash / ```sh / ```console block:
- `<!-- illustrative -->` (optionally `<!-- illustrative: why -->`): not run;
- `<!-- tested-by: retention_pipeline_tests/<file>.py -->`: that file must exist and contain each command's
  distinctive parts (its subcommand, its --flags, the env vars it sets), so the marker cannot lie silently;
- no marker: the block runs here, in the repo root, against a sandbox DuckDB file built once by `retention run`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

from retention_pipeline import configdoc
from retention_pipeline.config import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages written by a generator: their commands are checked against the generator's CLI as if marked tested-by.
GENERATED = {
    "docs/performance.md": ["bench/run.py", "Makefile"],
    "docs/reliability.md": ["reliability/run.py", "Makefile"],
}
SHELL_LANGS = {"bash", "sh", "shell", "console"}
ENV_NAME = re.compile(r"\b(?:RETENTION|METRONOME|CUSTOMERIO|META|GOOGLE|TIKTOK|PINTEREST)_[A-Z_]+\b")
# Upper-case words with those prefixes that are vendor vocabulary, not environment variables.
NOT_ENV_VARS = {"GOOGLE_ADS": "Data Manager accountType of a Google Ads account"}
MARKER = re.compile(r"^<!--\s*(illustrative|tested-by)\s*(?::\s*(.*?))?\s*-->$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    marker: str | None  # "illustrative", "tested-by" or None
    argument: str  # the tested-by path, or the illustrative reason
    text: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = re.match(r"^(`{3,})(\S*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, lang, start = opening.group(1), opening.group(2).lower(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(previous)
        blocks.append(
            Block(
                page,
                start + 1,
                lang,
                marker.group(1) if marker else None,
                (marker.group(2) or "") if marker else "",
                "\n".join(body),
            )
        )
    return blocks


SHELL_BLOCKS = [b for page in PAGES for b in fenced_blocks(page) if b.lang in SHELL_LANGS]


def commands(text: str) -> list[list[str]]:
    """Each command of a shell block as tokens: continuation lines joined, comments and trailing `&` dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    result = []
    for line in joined.splitlines():
        tokens = shlex.split(line, comments=True)
        if tokens and tokens[-1] == "&":
            tokens = tokens[:-1]
        if tokens:
            result.append(tokens)
    return result


def distinctive_parts(tokens: list[str]) -> list[str]:
    """What a test of this command must mention: the env vars it sets, its subcommand, its --flags."""
    parts = []
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
        parts.append(tokens[0].split("=", 1)[0])
        tokens = tokens[1:]
    if tokens[:1] == ["export"]:
        return parts + [t.split("=", 1)[0] for t in tokens[1:]]
    program, rest = tokens[0], tokens[1:]
    if Path(program).name.startswith("python") and rest[:1] == ["-m"]:
        parts.append(rest[1])
        rest = rest[2:]
    positional = [
        t for i, t in enumerate(rest) if not t.startswith("-") and not (i and rest[i - 1].startswith("--"))
    ]
    if positional:
        parts.append(positional[0])
    parts += [t.split("=", 1)[0] for t in rest if t.startswith("--")]
    return parts


def test_the_pages_exist_and_have_shell_blocks():
    names = {p.name for p in PAGES}
    for page in [
        "getting-started.md",
        "connecting.md",
        "adding-a-segment.md",
        "operating.md",
        "reference.md",
    ]:
        assert page in names, page
    assert len(SHELL_BLOCKS) > 20


@pytest.mark.parametrize("block", [b for b in SHELL_BLOCKS if b.marker == "tested-by"], ids=lambda b: b.id)
def test_a_tested_by_marker_names_a_test_that_mentions_the_command(block):
    path = ROOT / block.argument
    assert block.argument.startswith("retention_pipeline_tests/") and path.is_file(), (
        f"{block.id}: tested-by names {block.argument!r}, which is not a test file"
    )
    source = path.read_text()
    for tokens in commands(block.text):
        missing = [part for part in distinctive_parts(tokens) if part not in source]
        assert not missing, f"{block.id}: {block.argument} never mentions {missing} of `{shlex.join(tokens)}`"


@pytest.mark.parametrize(
    "block", [b for b in SHELL_BLOCKS if str(b.page.relative_to(ROOT)) in GENERATED], ids=lambda b: b.id
)
def test_commands_of_generated_pages_exist_in_their_generator(block):
    assert block.marker is None, (
        f"{block.id}: generated pages are checked against their generator, not marked"
    )
    source = "".join((ROOT / f).read_text() for f in GENERATED[str(block.page.relative_to(ROOT))])
    for tokens in commands(block.text):
        missing = [part for part in distinctive_parts(tokens) if part.split(".")[-1] not in source]
        assert not missing, f"{block.id}: the generator never mentions {missing} of `{shlex.join(tokens)}`"


def test_the_parts_of_a_command_are_its_subcommand_flags_and_variables():
    [tokens] = commands('RETENTION_DRY_RUN=1 .venv/bin/dg launch --assets "a/b" \\\n  --partition 1  # why')
    assert distinctive_parts(tokens) == ["RETENTION_DRY_RUN", "launch", "--assets", "--partition"]
    [tokens] = commands(".venv/bin/python -m retention_pipeline.sandbox meta --port 8092 &")
    assert distinctive_parts(tokens) == ["retention_pipeline.sandbox", "meta", "--port"]
    [tokens] = commands("SECRET=x python -m retention_pipeline.webhooks --port 8088")
    assert distinctive_parts(tokens) == ["SECRET", "retention_pipeline.webhooks", "--port"]


# --- Unmarked blocks run for real ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox_env(sandbox_run, tmp_path_factory) -> dict[str, str]:
    """An environment over a copy of the session's sandbox run (conftest.sandbox_run: `retention run`, pinned clock,
    small tenant), so commands that write (dg launch) change only this copy."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS and not k.startswith("DAGSTER_")}
    env |= sandbox_run.copy_to(tmp_path_factory.mktemp("docs"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


@pytest.mark.timeout(900)
@pytest.mark.parametrize("block", [b for b in SHELL_BLOCKS if b.marker is None and
                                   str(b.page.relative_to(ROOT)) not in GENERATED], ids=lambda b: b.id)  # fmt: skip
def test_an_unmarked_command_runs(block, sandbox_env):
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.text],
        cwd=ROOT,
        env=sandbox_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (
        f"{block.id} failed (exit {done.returncode}); mark it <!-- illustrative --> or "
        f"<!-- tested-by: … --> if it should not run here.\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


# --- Configuration reference, env vars, links, stable names ------------------------------------------------------


def test_configuration_page_is_what_configdoc_renders():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == configdoc.render(), (
        "docs/configuration.md is out of date with config.SETTINGS: run `make docs` "
        "(python -m retention_pipeline.configdoc > docs/configuration.md)"
    )


def test_every_setting_is_on_the_configuration_page():
    page = (ROOT / "docs" / "configuration.md").read_text()
    for name, setting in SETTINGS.items():
        assert f"| `{name}` |" in page, name
        assert setting.help.replace("|", "\\|") in page, name


def test_configdoc_groups_name_real_settings_and_link_their_headings():
    for group in configdoc.GROUPS:
        assert group.anchor == anchor_of(group.title), group.title
    grouped = [n for g in configdoc.GROUPS for n in g.names]
    assert len(grouped) == len(set(grouped)), "a setting is in two groups"
    assert set(configdoc.DETAILS) <= set(SETTINGS), set(configdoc.DETAILS) - set(SETTINGS)


def test_configdoc_does_not_import_dagster():
    probe = (
        "import sys, retention_pipeline.configdoc; assert 'dagster' not in sys.modules, 'dagster imported'"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_env_var_the_docs_name_exists(page):
    unknown = sorted(set(ENV_NAME.findall(page.read_text())) - set(SETTINGS) - set(NOT_ENV_VARS))
    assert not unknown, (
        f"{page.relative_to(ROOT)} names variables that config.SETTINGS does not define: {unknown}"
    )


def anchor_of(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped (except - and _), spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip()).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    in_fence = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        heading = re.match(r"^#{1,6}\s+(.*)$", line)
        if heading and not in_fence:
            base = anchor_of(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if (
            not resolved.exists()
            or fragment
            and resolved.suffix == ".md"
            and fragment not in anchors(resolved)
        ):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_anchors_follow_github():
    assert anchor_of("SQL models (`dbt_like_sql/`)") == "sql-models-dbt_like_sql"
    assert anchor_of("The analysts' copy") == "the-analysts-copy"
    assert anchor_of("Customer.io") == "customerio"
    assert anchor_of("1. Scaffold") == "1-scaffold"


def test_every_asset_job_schedule_and_sensor_is_named_in_the_docs():
    from retention_pipeline.definitions import defs

    text = "".join(p.read_text() for p in PAGES)
    repo = defs.get_repository_def()
    names = [key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()]
    names += [job.name for job in repo.get_all_jobs() if not job.name.startswith("__")]
    names += [s.name for s in repo.schedule_defs] + [s.name for s in repo.sensor_defs]
    missing = [name for name in names if f"`{name}`" not in text]
    assert not missing, f"not documented in README.md or docs/: {missing}"


def test_the_readme_stays_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 120
    for page in ["getting-started", "connecting", "adding-a-segment", "operating", "analysts", "configuration",
                 "reference", "performance", "reliability"]:  # fmt: skip
        assert f"(docs/{page}.md)" in readme, page
