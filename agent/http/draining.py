"""Tracking in-flight requests, so shutdown can wait for them.

Policy: aiohttp's own graceful shutdown stops reading from every connection the moment
it starts, so a request still uploading its body would hang until the timeout and be
cut. The daemon therefore closes the listening sockets first, waits here until the
requests already in the agent's hands are answered (bounded by the grace), and only
then lets aiohttp close the connections. Responses sent while draining carry
``Connection: close`` so keep-alive clients go elsewhere.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler


class InFlight:
    """Counts requests between their headers arriving and their response being sent."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count the request while it is handled."""
        self.count += 1
        self._idle.clear()
        try:
            response = await handler(request)
            if self.draining:
                response.force_close()
            return response
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def drain(self, *, deadline: float) -> bool:
        """Wait until no request is in flight or ``deadline`` (loop time) passes."""
        self.draining = True
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(remaining, 0))
        except TimeoutError:
            return False
        return True
