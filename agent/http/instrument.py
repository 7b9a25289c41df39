"""Request metrics middleware: counts and durations by route template and status.

Policy: the route label is the matched route's template (``/v1/status``), or
``unmatched`` for anything the router did not know, so scanners cannot inflate label
cardinality. Errors rendered by the JSON error middleware are counted with their status.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from agent.observe import metrics


def instrument(m: metrics.Metrics, *, listener: str) -> Middleware:
    """A middleware recording every request on ``m`` under ``listener``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            m.http_requests.labels(listener, route, request.method, str(status)).inc()
            m.http_duration.labels(listener, route, request.method).observe(
                time.perf_counter() - start
            )

    return middleware
