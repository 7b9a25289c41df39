"""The API application: status, config, reload, the catalog endpoints and /openapi.json.

Policy: read-only endpoints are of the ``job`` scope (a job's hook may look); anything
that changes the agent is ``admin``. Later features add their routes to :func:`routes`.
"""

from __future__ import annotations

import os
import platform
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from agent import __version__
from agent.config import reloading
from agent.http import (
    auth,
    bodies,
    cache,
    draining,
    ensure,
    errors,
    features,
    gpu,
    instrument,
    jobs,
    models,
    services,
)
from agent.http import routes as routing
from agent.http.context import CONTEXT, Context
from agent.observe import metrics

ROUTES = web.AppKey("routes", list[routing.Route])


def _config_info(loaded: reloading.Loaded) -> models.ConfigInfo:
    return models.ConfigInfo(
        generation=loaded.generation,
        source=loaded.source,
        loaded_at=loaded.loaded_at,
        error=loaded.error,
        pending_restart=list(loaded.pending_restart),
    )


async def get_status(request: web.Request) -> web.Response:
    """Version, uptime, configuration generation and readiness conditions."""
    ctx = request.app[CONTEXT]
    conds = ctx.conditions
    return bodies.json_response(
        models.StatusResponse(
            version=__version__,
            python=platform.python_version(),
            pid=os.getpid(),
            started_at=ctx.started,
            uptime_seconds=round(time.time() - ctx.started, 3),
            ready=conds.ready,
            config=_config_info(ctx.reloader.current),
            conditions=[
                models.ConditionModel(name=c.name, ok=c.ok, message=c.message, since=c.since)
                for c in conds.snapshot()
            ],
        )
    )


async def get_config(request: web.Request) -> web.Response:
    """The effective configuration. Token values and URL passwords are never part of it."""
    loaded = request.app[CONTEXT].reloader.current
    return bodies.json_response(
        models.ConfigResponse(
            config=_config_info(loaded),
            settings=loaded.settings.shown(),
            tokens={"job": loaded.tokens.job is not None, "admin": loaded.tokens.admin is not None},
        )
    )


async def post_reload(request: web.Request) -> web.Response:
    """Reload the configuration now; 422 with the problems if the new one is invalid."""
    ctx = request.app[CONTEXT]
    body = await bodies.read_model(request, models.ReloadRequest)
    outcome = await ctx.reloader.reload(body.reason or "API request")
    if not outcome.ok:
        raise errors.ApiError(
            422,
            "the new configuration is invalid; the previous one stays in force",
            code="config_invalid",
            details={
                "generation": outcome.generation,
                "problems": (outcome.error or "").splitlines(),
            },
        )
    return bodies.json_response(
        models.ReloadResponse(
            generation=outcome.generation,
            changed=list(outcome.changed),
            restart_required=list(outcome.restart_required),
        )
    )


async def get_openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API."""
    return web.json_response(routing.openapi(request.app[ROUTES]))


# What an agent of role ``services`` (the engine container's) serves: its own status and
# configuration, the supervisor and the gate. No feature, job or cache route: nothing
# there installs, and the container holds no store to serve.
SERVICES_ROLE_PATHS = frozenset(
    {"/v1/status", "/v1/config", "/v1/reload", "/v1/stop-gate", "/openapi.json"}
)


def routes(role: str = "full") -> list[routing.Route]:
    """The API's route table for an agent of ``role`` (server.role)."""
    table = _all_routes()
    if role == "services":
        return [
            r for r in table if r.path in SERVICES_ROLE_PATHS or r.path.startswith("/v1/services")
        ]
    return table


def _all_routes() -> list[routing.Route]:
    return [
        routing.Route(
            "GET", "/v1/status", get_status, "job", "Agent status", response=models.StatusResponse
        ),
        routing.Route(
            "GET",
            "/v1/config",
            get_config,
            "job",
            "Effective configuration",
            response=models.ConfigResponse,
        ),
        routing.Route(
            "POST",
            "/v1/reload",
            post_reload,
            "admin",
            "Reload the configuration",
            request=models.ReloadRequest,
            response=models.ReloadResponse,
            errors=(422,),
        ),
        routing.Route(
            "GET",
            "/v1/features",
            features.list_features,
            "job",
            "The feature catalog",
            response=features.FeatureList,
        ),
        routing.Route(
            "GET",
            "/v1/features/{id}",
            features.get_feature,
            "job",
            "One feature's manifest",
            errors=(404,),
        ),
        routing.Route(
            "POST",
            "/v1/plan",
            features.post_plan,
            "job",
            "Resolve feature requests into an install plan for a target platform",
            request=features.PlanRequest,
            errors=(422, 503),
        ),
        routing.Route(
            "POST",
            "/v1/ensure",
            ensure.post_ensure,
            "job",
            "Install what the requests need and is missing; NDJSON progress, then the result",
            request=ensure.EnsureRequest,
            response=ensure.EnsureEvent,
            errors=(403, 404, 422, 503),
            media_type="application/x-ndjson",
        ),
        routing.Route(
            "POST",
            "/v1/jobs",
            jobs.post_job,
            "job",
            "A job starts (the job-started hook): open it, ensure its features; NDJSON: the "
            "job event, the ensure events, then the result",
            request=jobs.JobStartRequest,
            response=jobs.JobEvent,
            errors=(403, 409, 422, 502, 503),
            media_type="application/x-ndjson",
        ),
        routing.Route(
            "GET",
            "/v1/jobs/current",
            jobs.current_jobs,
            "job",
            "The jobs open now",
            response=jobs.CurrentJobs,
        ),
        routing.Route(
            "POST",
            "/v1/jobs/{id}/complete",
            jobs.complete_job,
            "job",
            "A job ended (the job-completed hook): release its leases",
            request=jobs.JobCompleteRequest,
            response=jobs.JobCompleted,
            errors=(403, 404),
        ),
        *services_routes(),
        *cache.routes(),
        routing.Route("GET", "/openapi.json", get_openapi, None, "This document"),
    ]


def services_routes() -> list[routing.Route]:
    """The supervisor's routes: reading is ``job``, changing is ``admin``."""
    one = "/v1/services/{name}"
    return [
        routing.Route(
            "GET",
            "/v1/services",
            services.list_services,
            "job",
            "Supervised services: state, pid, uptime, restarts, last exit and health check",
            response=services.ServiceList,
            errors=(503,),
        ),
        routing.Route(
            "GET",
            f"{one}/logs",
            services.get_logs,
            "job",
            "The last lines of a service's output (?lines=N, default 100)",
            response=services.LogResponse,
            errors=(400, 404, 503),
        ),
        routing.Route(
            "POST",
            f"{one}/start",
            services.start_service,
            "admin",
            "Start a service (also clears `failed`)",
            response=services.ServiceModel,
            errors=(404, 503),
        ),
        routing.Route(
            "POST",
            f"{one}/stop",
            services.stop_service,
            "admin",
            "Stop a service; it stays down until started",
            response=services.ServiceModel,
            errors=(404, 503),
        ),
        routing.Route(
            "POST",
            f"{one}/restart",
            services.restart_service,
            "admin",
            "Restart a service now (counted with reason manual)",
            response=services.ServiceModel,
            errors=(404, 503),
        ),
        routing.Route(
            "GET",
            "/v1/gpu",
            gpu.get_gpu,
            "job",
            "The GPUs, this runner's scope, their health and the driver's CUDA",
            response=gpu.GpuStatus,
            errors=(503,),
        ),
        routing.Route(
            "POST",
            "/v1/gpu/health/clear",
            gpu.post_clear,
            "admin",
            "Clear a GPU's verdict once it is fixed (verdicts never clear themselves)",
            request=gpu.ClearRequest,
            response=gpu.ClearResponse,
            errors=(404, 409, 503),
        ),
        routing.Route(
            "GET",
            "/v1/stop-gate",
            services.get_gate,
            "job",
            "The stop gate that holds gated services (dockerd) up at shutdown",
            response=services.GateModel,
            errors=(503,),
        ),
        routing.Route(
            "POST",
            "/v1/stop-gate",
            services.post_gate,
            "admin",
            "Open or close the stop gate",
            request=services.GateRequest,
            response=services.GateModel,
            errors=(503,),
        ),
    ]


def _guarded(route: routing.Route) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if route.scope is not None:
            reloader = request.app[CONTEXT].reloader
            auth.check(request, route.scope, lambda: reloader.current)
        return await route.handler(request)

    return handler


def make_app(
    ctx: Context, *, m: metrics.Metrics, inflight: draining.InFlight, role: str = "full"
) -> web.Application:
    """Build the API application (served on the unix socket and, if set, on TCP)."""
    # Bodies are read by agent.http.bodies against the live limit; aiohttp's own limit
    # only guards its form parser, which no route uses.
    app = web.Application(
        middlewares=[
            inflight.middleware,
            instrument.instrument(m, listener="api"),
            errors.json_errors,
        ],
    )
    table = routes(role)
    app[CONTEXT] = ctx
    app[ROUTES] = table
    for route in table:
        if route.method == "GET":  # HEAD too, as HTTP expects of every GET
            app.router.add_get(route.path, _guarded(route))
        else:
            app.router.add_route(route.method, route.path, _guarded(route))
    return app
