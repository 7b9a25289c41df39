"""The read-only probe and metrics listener: /healthz, /readyz and /metrics.

Policy:
- /healthz is liveness: it answers 200 whenever the event loop can run the handler, and
  reports the loop's lag; it never depends on configuration or services, so a kubelet
  never restarts the agent for something a restart cannot fix;
- /readyz is readiness: 200 only when every registered condition holds; the body lists
  each condition, so ``kubectl describe`` and humans see why not;
- /metrics is the agent's own registry with content negotiation (text 0.0.4 / 1.0.0 /
  OpenMetrics) by prometheus_client's aiohttp handler.
"""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from agent.http import errors, instrument
from agent.observe import conditions, looplag, metrics

CONDITIONS = web.AppKey("conditions", conditions.Conditions)
LOOP_LAG = web.AppKey("loop_lag", looplag.LoopLag)
STARTED = web.AppKey("started", float)


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
    """Readiness: 200 when every condition holds, else 503; lists each condition."""
    conds = request.app[CONDITIONS]
    items = [
        {"name": c.name, "ok": c.ok, "message": c.message, "since": c.since}
        for c in conds.snapshot()
    ]
    ready = conds.ready
    return web.json_response({"ready": ready, "conditions": items}, status=200 if ready else 503)


def make_app(
    *,
    m: metrics.Metrics,
    conds: conditions.Conditions,
    lag: looplag.LoopLag,
    started: float,
) -> web.Application:
    """Build the probe application."""
    app = web.Application(
        middlewares=[instrument.instrument(m, listener="probe"), errors.json_errors]
    )
    app[CONDITIONS] = conds
    app[LOOP_LAG] = lag
    app[STARTED] = started
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(m.registry))
    return app
