"""The NDJSON streams of ``POST /v1/ensure`` and ``POST /v1/jobs``: one JSON object per
line, the plan's events as they come, the ``result`` last.

Policy: a client that went away makes every later write a no-op; the plan runs on to
its end through the coordinator (other requests may be waiting on the same installs),
see :mod:`agent.install.coordinator`.
"""

from __future__ import annotations

import json
import time

from aiohttp import web
from pydantic import BaseModel

from agent.install import coordinator, plans
from agent.platform import plans as wire


class Stream:
    """Writes NDJSON lines to one response."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.gone = False

    async def send(self, event: wire.Event) -> None:
        """Write one event (a no-op once the client has gone)."""
        await self._write((json.dumps(event, separators=(",", ":")) + "\n").encode())

    async def send_model(self, event: BaseModel) -> None:
        """Write one event that is an API model."""
        await self._write((event.model_dump_json(exclude_none=True) + "\n").encode())

    async def _write(self, line: bytes) -> None:
        if self.gone:
            return
        try:
            await self.response.write(line)
        except (ConnectionError, RuntimeError):
            self.gone = True

    async def close(self) -> None:
        """End the stream."""
        if not self.gone:
            try:
                await self.response.write_eof()
            except (ConnectionError, RuntimeError):
                self.gone = True


async def open_stream(request: web.Request) -> Stream:
    """Start the 200 NDJSON response: nothing can be answered as an error after this."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    return Stream(response)


async def run_plan(
    installs: coordinator.Coordinator, plan: wire.Plan, stream: Stream, started: float
) -> wire.ResultEvent:
    """Send the ``plan`` event, run ``plan`` with every event sent as it comes, and send
    the ``result`` (with the server's time since ``started``, a ``perf_counter``)."""
    await stream.send(
        {
            "event": "plan",
            "features": [
                {"id": s["id"], "version": s["version"], "method": s["method"], "round": s["round"]}
                for s in plan["features"]
            ],
        }
    )
    outcomes = await plans.run(installs, plan, stream.send)
    final = plans.result(plan, outcomes)
    final["seconds"] = round(time.perf_counter() - started, 6)  # server time, for clients
    await stream.send(final)
    return final


async def refuse_plan(
    plan: wire.Plan, stream: Stream, error: str, started: float
) -> wire.ResultEvent:
    """Send the ``plan`` event and a ``result`` in which every feature failed with
    ``error`` (the plan could not run at all, e.g. its entries cannot be leased)."""
    await stream.send(
        {
            "event": "plan",
            "features": [
                {"id": s["id"], "version": s["version"], "method": s["method"], "round": s["round"]}
                for s in plan["features"]
            ],
        }
    )
    reason = RuntimeError(error)
    outcomes: plans.Outcomes = {s["id"]: reason for s in plan["features"]}
    final = plans.result(plan, outcomes)
    final["ok"] = False  # even a plan without features did not get its lease
    final["seconds"] = round(time.perf_counter() - started, 6)
    await stream.send(final)
    return final
