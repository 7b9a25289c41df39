"""Fixtures for the store tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.store.server import Server


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A real HTTP server on 127.0.0.1; script it with ``http_server.route(path, *replies)``."""
    # A proxy from the environment (a CI runner's) must not sit between client and server.
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    with Server() as server:
        yield server
