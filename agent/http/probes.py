"""The read-only probe and metrics listener: /healthz, /readyz and /metrics.

Policy:
- /healthz is liveness: it answers 200 whenever the event loop can run the handler, and
  reports the loop's lag; it never depends on configuration or services, so a kubelet
  never restarts the agent for something a restart cannot fix;
- /readyz is readiness: 200 only when every registered condition holds; the body lists
  each condition, so ``kubectl describe`` and humans see why not. ``?exclude=gpu`` leaves
  named conditions out (a startup probe must not wait on a sick GPU);
- /metrics is the agent's own registry with content negotiation (text 0.0.4 / 1.0.0 /
  OpenMetrics, by prometheus_client's encoders; gzip when asked), after the engines that
  read per scrape (the GPU's) have read, each within its own deadline, with the blocks
  those engines render and cache themselves appended;
- /openapi.json is not served here: it answers 404 with the ``curl`` line that reads it
  from the API socket. The document describes routes this port does not serve (a client
  built from it would send its requests here and get 404s), and the port is the one
  left open to the kubelet and Prometheus, often on 0.0.0.0 without a token: it should
  disclose no more than probes need, not the API's shape, scopes and exact version.
  Anyone who may use the API can read the document where the API is. Every other
  unknown path is a 404 that lists what this port serves.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

from aiohttp import hdrs, web
from prometheus_client import exposition

from agent.http import errors, instrument, models
from agent.observe import conditions, looplag, metrics

CONDITIONS = web.AppKey("conditions", conditions.Conditions)
_CONDITION_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
LOOP_LAG = web.AppKey("loop_lag", looplag.LoopLag)
STARTED = web.AppKey("started", float)
API_SOCKET = web.AppKey("api_socket", str)


async def healthz(request: web.Request) -> web.Response:
    """Liveness, with the loop's last and worst recent lag."""
    lag = request.app[LOOP_LAG]
    return web.json_response(
        {
            "status": "ok",
            "loop_lag_seconds": round(lag.last, 6),
            "loop_lag_max_seconds": round(lag.worst_recent, 6),
            "uptime_seconds": round(time.time() - request.app[STARTED], 3),
        }
    )


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 when every condition holds, else 503; lists each condition.
    ``?exclude=gpu`` (repeatable, or comma-separated) leaves conditions out: a startup
    probe that must not wait on a sick GPU."""
    conds = request.app[CONDITIONS]
    exclude = frozenset(
        name.strip() for value in request.query.getall("exclude", []) for name in value.split(",")
    )
    bad = sorted(n for n in exclude if not _CONDITION_NAME.fullmatch(n))
    if bad:
        raise errors.ApiError(
            400,
            f"exclude={bad[0][:64]!r} is not a condition name; expected names such as gpu "
            f"(this agent's: {', '.join(sorted(conds.names()))})",
        )
    items = [
        {
            "name": c.name,
            "ok": c.ok,
            "message": c.message,
            "since": models.rfc3339(c.since),
            **({"excluded": True} if c.name in exclude else {}),
        }
        for c in conds.snapshot()
    ]
    ready = conds.ready_without(exclude)
    return web.json_response({"ready": ready, "conditions": items}, status=200 if ready else 503)


async def openapi_elsewhere(request: web.Request) -> web.Response:
    """404: the document is on the API socket; the answer says how to read it there."""
    where = request.app[API_SOCKET]
    raise errors.ApiError(
        404,
        "the API's OpenAPI document is not served on the probe port; read it from the API "
        f"socket: curl --unix-socket {shlex.quote(where)} http://agent/openapi.json",
        details={"socket": where},
    )


_EOF = b"# EOF\n"


def _splice(body: bytes, block: bytes) -> bytes:
    """``block`` appended to ``body``: OpenMetrics ends once, with ``# EOF``."""
    if body.endswith(_EOF):
        return body[: -len(_EOF)] + block.removesuffix(_EOF) + _EOF
    return body + block


def make_app(
    *,
    m: metrics.Metrics,
    conds: conditions.Conditions,
    lag: looplag.LoopLag,
    started: float,
    api_socket: Path | None = None,
) -> web.Application:
    """Build the probe application; ``api_socket`` is where a 404 for /openapi.json points
    (``server.socket_path``)."""
    app = web.Application(
        middlewares=[instrument.instrument(m, listener="probe"), errors.json_errors]
    )
    app[CONDITIONS] = conds
    app[LOOP_LAG] = lag
    app[STARTED] = started
    app[API_SOCKET] = str(api_socket) if api_socket is not None else "<server.socket_path>"
    app[errors.NOT_FOUND_HINT] = (
        "this port serves /healthz, /readyz and /metrics; the API and its /openapi.json "
        "are on the API socket"
    )
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

    async def scrape(request: web.Request) -> web.StreamResponse:
        for refresh in m.before_scrape:  # each bounds its own wait
            await refresh()
        accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
        encoder, content_type = exposition.choose_encoder(accept)
        body = encoder(m.registry)
        for block in m.blocks:
            body = _splice(body, block(encoder, content_type))
        response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()
        return response

    app.router.add_get("/metrics", scrape)
    app.router.add_get("/openapi.json", openapi_elsewhere)
    return app
