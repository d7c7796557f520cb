"""The one place a sandbox enters the pipeline: each system's resource asks here for its sandbox by name.

Production modules never import `retention_pipeline.sandbox` (a test checks the import graph): the sandboxes are
demo and test doubles, loaded only when the environment resolved a system to "sandbox" (environment.py decides).
"""

from __future__ import annotations

import importlib
from typing import Any

SANDBOXES = {
    "metronome": "retention_pipeline.sandbox.metronome",
    "customerio": "retention_pipeline.sandbox.customerio",
    "meta": "retention_pipeline.sandbox.meta",
    "google": "retention_pipeline.sandbox.google",
    "tiktok": "retention_pipeline.sandbox.tiktok",
    "pinterest": "retention_pipeline.sandbox.pinterest",
}


def sandbox_module(system: str) -> Any:
    """The sandbox module of `system` (each exposes `embedded(**settings)`, an in-process instance)."""
    try:
        path = SANDBOXES[system]
    except KeyError:
        raise LookupError(f"{system} has no sandbox; set its credentials to use the real service") from None
    return importlib.import_module(path)


def embedded_sandbox(system: str, **settings: Any) -> Any:
    """A fresh in-process sandbox of `system` (a recording double with an httpx `transport()`)."""
    return sandbox_module(system).embedded(**settings)
