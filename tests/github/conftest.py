"""The GitHub stub on a free loopback port, and clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import models
from agent.github import client
from tests.github.stub import Stub, serve


@pytest.fixture(params=["", "/api/v3"], ids=["github.com", "ghes"])
async def stub(request: pytest.FixtureRequest) -> AsyncIterator[Stub]:
    """The stub at the root (github.com's shape) and under /api/v3 (GHES's)."""
    async with serve(Stub(base=request.param)) as served:
        yield served


MakeClient = Callable[..., client.Client]


@pytest.fixture
async def make_client(stub: Stub, tmp_path: Path) -> AsyncIterator[MakeClient]:
    """``make_client(app=False, **github)``: a client for the stub with a token file (or
    the App's key and ids), extra github settings as keywords."""
    made: list[client.Client] = []

    def make(app: bool = False, **github: Any) -> client.Client:
        creds = stub.credentials(tmp_path, app=app)
        settings = models.Settings.model_validate(
            {"github": {"api_url": stub.url, **creds, **github}}
        )
        made.append(client.Client(lambda: settings))
        return made[-1]

    yield make
    for c in made:
        await c.close()
