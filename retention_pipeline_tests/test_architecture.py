"""Architectural rules, checked on the source: production imports no sandbox, the vendor-neutral parts name no vendor,
and measurement and operations take lineage from the catalog rather than from another stage's definitions."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "retention_pipeline"
SANDBOX = "retention_pipeline.sandbox"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth (inside functions too), relative ones resolved.

    `from a import b` yields both `a` and `a.b` (b may be a module)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(path.read_text(), package, str(path))


def _imports_in(source: str, package: str, filename: str = "<source>") -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def _production_files() -> list[Path]:
    """Every module of the package except the sandboxes themselves (retention_pipeline/sandbox/**)."""
    return sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "sandbox")


def _is_sandbox(module: str) -> bool:
    return module == SANDBOX or module.startswith(SANDBOX + ".")


def test_the_import_scanner_sees_every_form():
    source = (
        "import retention_pipeline.sandbox.meta\n"
        "from retention_pipeline.sandbox import recording\n"
        "from retention_pipeline import sandbox\n"
        "import importlib\n"
        "def f():\n"
        "    from ..sandbox.metronome import tenant\n"
        "    return importlib.import_module('retention_pipeline.sandbox.meta')\n"
    )
    lines = {
        line for line, module in _imports_in(source, "retention_pipeline.destinations") if _is_sandbox(module)
    }
    assert lines == {1, 2, 3, 6}


def test_production_modules_import_no_sandbox():
    """Sandboxes reach the pipeline only through retention_pipeline/transports.py, by name (importlib)."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _production_files()
        for line, module in _imports(path)
        if _is_sandbox(module)
    ]
    assert not offenders, "\n".join(offenders)


def test_loading_definitions_imports_no_sandbox():
    probe = (
        "import retention_pipeline.definitions, sys; "
        "print(sorted(m for m in sys.modules if m.startswith('retention_pipeline.sandbox')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


VENDOR_NEUTRAL = [
    "retention_pipeline/destinations/sync.py",
    "retention_pipeline/destinations/routing.py",
    "retention_pipeline/destinations/assets.py",
    "retention_pipeline/destinations/definitions.py",
    "retention_pipeline/segments/engine.py",
    "retention_pipeline/segments/project.py",
    "retention_pipeline/measurement/*.py",
    "dbt_like_sql/measurement/*.sql",
]
VENDORS = {"customerio", "meta", "google", "tiktok", "pinterest"}
# Words, lowercased: snake_case, kebab-case and dotted names split at `_`, `-` and `.`, CamelCase at its humps
# ("CustomerIoAdapter" → customer, io, adapter), an all-caps run kept whole ("METADATA").
WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
DAGSTER_KEY = re.compile(r"dagster/[\w/.-]+")


def vendor_words(line: str) -> list[str]:
    """The vendor names in a line of text, as whole words (so `metadata` is not `meta`): a word, or two adjacent
    words spelling one (`Customer.io`, `CustomerIo`, `TikTok`). Dagster's own keys (`dagster/...`) are ignored."""
    words = [w.lower() for w in WORD.findall(DAGSTER_KEY.sub(" ", line))]
    singles = [w for w in words if w in VENDORS]
    pairs = [a + b for a, b in zip(words, words[1:], strict=False) if a + b in VENDORS]
    return singles + pairs


def test_vendor_words_are_whole_words():
    assert vendor_words("routing.meta_min_audience_floor, CustomerIoAdapter, Customer.io") == [
        "meta",
        "customerio",
        "customerio",
    ]
    assert sorted(vendor_words("TikTok / tiktok_ads; GOOGLE; pinterest-ads")) == [
        "google",
        "pinterest",
        "tiktok",
        "tiktok",
    ]
    assert (
        vendor_words("metadata=dg.MetadataValue.md(x), METADATA, 'dagster/kind/meta', metaphor, googled")
        == []
    )


def _vendor_neutral_files() -> list[Path]:
    return sorted(path for pattern in VENDOR_NEUTRAL for path in ROOT.glob(pattern))


@pytest.mark.parametrize("path", _vendor_neutral_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_engine_routing_measurement_and_checks_name_no_vendor(path):
    """Destinations are plug-ins: what is true of every destination lives in the engine, nothing vendor-specific."""
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {', '.join(sorted(set(words)))}: {line.strip()[:120]}"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if (words := vendor_words(line))
    ]
    assert not hits, "\n".join(hits)


def test_every_vendor_neutral_path_exists():
    for pattern in VENDOR_NEUTRAL:
        assert list(ROOT.glob(pattern)), pattern


STAGES = ("source", "models", "segments", "destinations", "measurement", "operations")


@pytest.mark.parametrize("stage", ["measurement", "operations"])
def test_stage_takes_lineage_from_the_catalog_not_another_stages_definitions(stage):
    """`definitions` modules build Definitions; reading another stage's means building it. Lineage (who writes which
    table) comes from retention_pipeline/catalog.py instead."""
    offenders = []
    for path in sorted((PACKAGE / stage).rglob("*.py")):
        for line, module in _imports(path):
            parts = module.split(".")
            if parts[0] != "retention_pipeline" or parts[-1] != "definitions":
                continue
            if parts[1:2] != [stage]:  # another stage's, or the project's root definitions
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offenders, "\n".join(offenders)
