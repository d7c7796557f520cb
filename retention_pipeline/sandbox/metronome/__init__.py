"""An embedded, deterministic Metronome tenant that speaks the real wire format (in-process and on loopback)."""

from __future__ import annotations

from datetime import datetime


def embedded(*, seed: int, customers: int, now: datetime):
    """The in-process tenant a run uses when METRONOME_BEARER_TOKEN is unset (see transports.py)."""
    from retention_pipeline.sandbox.metronome.server import MetronomeSandbox
    from retention_pipeline.sandbox.metronome.tenant import TenantSpec, build_tenant

    return MetronomeSandbox(build_tenant(TenantSpec(seed=seed, customers=customers, now=now)))
