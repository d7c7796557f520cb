"""One loopback port per module for the destination sandboxes (the root conftest already clears every setting)."""

from __future__ import annotations

import pytest

from retention_pipeline.sandbox.http import LoopbackServer


class _Switch:
    """Forwards to the current test's sandbox, so one loopback port serves a whole module."""

    target = None

    def handle(self, request):
        return self.target.handle(request)


@pytest.fixture(scope="module")
def loopback():
    """A real loopback server per module: closing one waits out `serve_forever`'s 0.5 s poll, too slow per test."""
    switch = _Switch()
    with LoopbackServer(switch, "127.0.0.1", 0) as server:
        yield switch, server


@pytest.fixture
def server(loopback, sandbox):
    """The test's `sandbox` fixture on the module's loopback port."""
    switch, running = loopback
    switch.target = sandbox
    yield running
    switch.target = None
