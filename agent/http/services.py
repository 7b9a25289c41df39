"""Service endpoints: list, logs, start/stop/restart, and the stop gate.

Policy: reading (``GET /v1/services``, logs, the gate) is of the ``job`` scope; anything
that changes a service or the gate is ``admin``, so job code cannot restart dockerd.
Commands answer 202 with the service as it is when the command is taken: the service's
task carries it out, and ``GET /v1/services`` shows how it went.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import Field

from agent.http import bodies, errors, models
from agent.http.context import CONTEXT
from agent.services import processes, supervising, supervisor

MAX_LOG_LINES = 10_000


class HealthModel(models.ApiModel):
    """The last health check."""

    ok: bool
    message: str
    at: models.Timestamp = Field(description="When it finished.")
    latency_seconds: float


class BackoffModel(models.ApiModel):
    """One restart delay the supervisor scheduled."""

    attempt: int = Field(description="Faults in a row when it was planned.")
    base_seconds: float = Field(description="The exponential step, before jitter.")
    delay_seconds: float = Field(description="The delay actually waited (less jitter).")
    at: models.Timestamp = Field(description="When it was planned.")


class ServiceModel(models.ApiModel):
    """One service, as the supervisor sees it now."""

    name: str
    state: str = Field(description=", ".join(supervising.STATES))
    message: str = Field(description="Why it is in that state.")
    since: models.Timestamp = Field(description="When it last changed state.")
    up: bool = Field(description="Running and its last health check passed.")
    pid: int | None
    uptime_seconds: float | None
    restarts: dict[str, int] = Field(description="By reason: exit, unhealthy, manual.")
    last_exit_code: int | None = Field(description="Negative: killed by that signal.")
    last_exit: str | None = Field(description="The last exit in words, e.g. killed by SIGKILL.")
    last_exit_at: models.Timestamp | None = Field(description="When it last exited.")
    last_health: HealthModel | None
    consecutive_failures: int
    next_start_at: models.Timestamp | None = Field(description="When a scheduled restart happens.")
    backoff: list[BackoffModel] = Field(description="The last restart delays scheduled.")
    required_for_ready: bool
    depends_on: list[str]
    output_lines_dropped: int = Field(description="Lines the log rate limit dropped.")


class ServiceList(models.ApiModel):
    """GET /v1/services."""

    services: list[ServiceModel]
    ready: bool = Field(description="Whether every required service is healthy.")
    message: str


class LogLine(models.ApiModel):
    """One line of a service's output."""

    time: models.Timestamp = Field(description="When the agent read it.")
    stream: str = Field(description="stdout or stderr")
    text: str


class LogResponse(models.ApiModel):
    """GET /v1/services/{name}/logs."""

    name: str
    lines: list[LogLine]
    buffer_lines: int = Field(description="How many lines the ring buffer keeps.")


class GateModel(models.ApiModel):
    """The stop gate."""

    open: bool
    reason: str
    since: models.Timestamp = Field(description="When it last opened or closed.")
    holders: dict[str, str] = Field(
        default_factory=dict,
        description="Who holds it closed (operator, jobs) and why; empty when open.",
    )


class GateRequest(models.ApiRequest):
    """POST /v1/stop-gate."""

    open: bool = Field(
        description=(
            "false: hold gated services up at shutdown (until an operator opens it); true: "
            "the operator lets go (a running job's hold stays, unless force)."
        )
    )
    force: bool = Field(
        default=False,
        description=(
            "With open: drop every hold, the jobs' included, so a shutdown stops dockerd "
            "now even under a running job (the jobs engine closes it again on its next "
            "job start or end while jobs are open)."
        ),
    )
    reason: str = Field(default="", max_length=200, description="Who and why, for the log.")


def _supervisor(request: web.Request) -> supervisor.Supervisor:
    sup = request.app[CONTEXT].services()
    if sup is None:
        raise errors.ApiError(503, "the supervisor is starting; retry in a moment")
    return sup


def _service(request: web.Request) -> supervising.Service:
    try:
        return _supervisor(request).get(request.match_info["name"])
    except supervisor.UnknownService as exc:
        raise errors.ApiError(404, str(exc), details={"known": exc.known}) from exc


def describe(service: supervising.Service) -> ServiceModel:
    """The API's view of ``service``."""
    health = service.last_health
    return ServiceModel(
        name=service.name,
        state=service.state,
        message=service.message,
        since=service.state_since,
        up=service.up,
        pid=service.pid,
        uptime_seconds=(
            round(time.time() - service.started_at, 3)
            if service.pid is not None and service.started_at is not None
            else None
        ),
        restarts=dict(service.restarts),
        last_exit_code=service.last_exit,
        last_exit=(
            processes.describe_exit(service.last_exit) if service.last_exit_at is not None else None
        ),
        last_exit_at=service.last_exit_at,
        last_health=(
            HealthModel(
                ok=health.ok, message=health.message, at=health.at, latency_seconds=health.seconds
            )
            if health is not None
            else None
        ),
        consecutive_failures=service.failures,
        next_start_at=service.next_start_at,
        backoff=[
            BackoffModel(
                attempt=p.attempt,
                base_seconds=p.base_seconds,
                delay_seconds=p.delay_seconds,
                at=p.at,
            )
            for p in service.backoff.history
        ],
        required_for_ready=service.spec.required_for_ready,
        depends_on=list(service.spec.depends_on),
        output_lines_dropped=service.output.dropped_total,
    )


async def list_services(request: web.Request) -> web.Response:
    """Every service: state, pid, uptime, restarts, last exit and last health check."""
    sup = _supervisor(request)
    ready, message = sup.readiness()
    items = [describe(sup.services[n]) for n in sorted(sup.services)]
    return bodies.json_response(ServiceList(services=items, ready=ready, message=message))


async def get_logs(request: web.Request) -> web.Response:
    """The last ``lines`` (default 100) lines of a service's output."""
    service = _service(request)
    raw = request.query.get("lines", "100")
    if not raw.isdigit() or not 0 < int(raw) <= MAX_LOG_LINES:
        raise errors.ApiError(
            400,
            f"lines={raw!r}: expected a whole number from 1 to {MAX_LOG_LINES}",
            code="validation_error",
        )
    lines = [
        LogLine(time=line.time, stream=line.stream, text=line.text)
        for line in service.output.tail(int(raw))
    ]
    return bodies.json_response(
        LogResponse(name=service.name, lines=lines, buffer_lines=service.output.lines.maxlen or 0)
    )


def _command(kind: supervising.Command) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        service = _service(request)
        service.request(kind)
        return bodies.json_response(describe(service), status=202)

    handler.__doc__ = f"{kind.capitalize()} a service (admin)."
    return handler


start_service = _command("start")
stop_service = _command("stop")
restart_service = _command("restart")


def _gate(sup: supervisor.Supervisor) -> GateModel:
    gate = sup.gate
    return GateModel(open=gate.is_open, reason=gate.reason, since=gate.since, holders=gate.holders)


async def get_gate(request: web.Request) -> web.Response:
    """Whether the stop gate is open."""
    return bodies.json_response(_gate(_supervisor(request)))


async def post_gate(request: web.Request) -> web.Response:
    """Open or close the stop gate (admin)."""
    sup = _supervisor(request)
    body = await bodies.read_model(request, GateRequest)
    reason = body.reason or "API request"
    if body.open:
        sup.gate.open(reason, force=body.force)
    else:
        sup.gate.close(reason)
    return bodies.json_response(_gate(sup))
