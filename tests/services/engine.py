"""Running the supervisor engine in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from agent.config import services as specs
from agent.services import supervising, supervisor


def spec(**fields: Any) -> specs.ServiceSpec:
    """A service spec from plain data, with quick defaults for tests."""
    fields.setdefault("restart", {})
    fields["restart"] = {"backoff_initial_seconds": 0.05, **fields["restart"]}
    fields.setdefault("stop", {})
    fields["stop"] = {"grace_seconds": 2, **fields["stop"]}
    return specs.ServiceSpec.model_validate(fields)


async def until(
    predicate: Callable[[], object], *, timeout: float = 20.0, what: str = "condition"
) -> None:
    """Wait for ``predicate`` to hold (polling; the timeout only guards a hung test)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(
    services: dict[str, specs.ServiceSpec], *, grace: float = 10.0
) -> AsyncIterator[supervisor.Supervisor]:
    """A started supervisor, shut down (and every task awaited) afterwards."""
    sup = supervisor.Supervisor(services)
    sup.start()
    try:
        yield sup
    finally:
        loop = asyncio.get_running_loop()
        await sup.shutdown(deadline=loop.time() + grace)


def state_of(sup: supervisor.Supervisor, name: str) -> supervising.State:
    return sup.get(name).state
