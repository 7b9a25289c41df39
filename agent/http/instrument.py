"""Request metrics middleware: counts and durations by route template and status.

Policy: the route label is the matched route's template (``/v1/status``), also for a
405 (a known path asked with the wrong method is that route's traffic, and the template
is what a dashboard filters on), or ``unmatched`` for a path the router did not know;
methods outside the standard set are counted as ``other``, so scanners cannot inflate
label cardinality. Errors
rendered by the JSON error middleware are counted with their status. Label children are
cached per label set: a probe endpoint hit every few seconds should cost a dict lookup,
not prometheus_client's locked label resolution.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter, Histogram

from agent.observe import metrics

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def instrument(m: metrics.Metrics, *, listener: str) -> Middleware:
    """A middleware recording every request on ``m`` under ``listener``."""
    children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def child(route: str, method: str, status: int) -> tuple[Counter, Histogram]:
        key = (route, method, status)
        found = children.get(key)
        if found is None:
            found = children[key] = (
                m.http_requests.labels(listener, route, method, str(status)),
                m.http_duration.labels(listener, route, method, str(status)),
            )
        return found

    async def template(request: web.Request) -> str:
        resource = request.match_info.route.resource
        if resource is not None:
            return resource.canonical
        if isinstance(request.match_info.http_exception, web.HTTPMethodNotAllowed):
            # The router keeps no note of which resource refused the method: ask each
            # again. Only a 405 pays for it, and the table is a few dozen routes.
            for candidate in request.app.router.resources():
                _, allowed = await candidate.resolve(request)
                if allowed:
                    return candidate.canonical
        return "unmatched"

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        route = await template(request)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            method = request.method if request.method in _METHODS else "other"
            counter, histogram = child(route, method, status)
            counter.inc()
            histogram.observe(time.perf_counter() - start)

    return middleware
