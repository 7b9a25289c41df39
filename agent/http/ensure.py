"""``POST /v1/ensure``: resolve, install what is missing, and stream progress as NDJSON.

Policy:
- everything that can be wrong with the request (body, labels, options, resolution) is
  answered before the stream starts, as an ordinary JSON error (400/422/503); once the
  stream has started the status is 200 and each line is one :class:`EnsureEvent`;
- the plan runs through the daemon's coordinator and the one plan runner
  (:mod:`agent.install.plans`), which sends every event as it comes; the last line is
  always the ``result`` event;
- a client that goes away stops only its own stream (see :mod:`agent.install.coordinator`).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field

from agent.http import bodies, errors, features, jobs, models
from agent.http.context import CONTEXT
from agent.install import plans
from agent.jobs import leases
from agent.platform import plans as wire
from agent.store import layout


class EnsureRequest(models.ApiRequest):
    """POST /v1/ensure."""

    requests: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Requests as in labels, without the prefix: node@20, python@3.12;pip=true.",
    )
    labels: list[str] = Field(
        default_factory=list, max_length=64, description="Runner labels; feature: ones count."
    )
    team: wire.JsonObject | None = Field(
        default=None, description="A .github/runner-config.yml document, as JSON."
    )
    target_platform: features.TargetModel | None = Field(
        default=None, description="The job's platform. Default: the agent's own."
    )
    options: dict[str, Annotated[dict[str, str], Field(max_length=64)]] = Field(
        default_factory=dict,
        max_length=32,
        description="Options per requested feature: {feature: {option: value}}, at most 64 each.",
    )
    job: jobs.JobModel | None = Field(
        default=None, description="Lease the entries to this job until it ends."
    )


class FeatureResult(models.ApiModel):
    """One feature of the ``result`` event."""

    id: str
    version: str
    method: str
    result: Literal["hit", "installed", "present", "left", "failed", "skipped"]
    entry: str | None = Field(default=None, description="The entry's folder in the store.")
    path: list[str] = Field(default_factory=list, description="PATH entries it adds.")
    env: dict[str, str] = Field(default_factory=dict, description="Variables it sets.")
    seconds: float = 0.0
    steps_left: list[wire.JsonObject] = Field(
        default_factory=list, description="System package steps for the runner to run."
    )
    error: str | None = None
    manager: str | None = Field(
        default=None, description="A system step run on this host: its package manager."
    )
    already_present: bool | None = Field(
        default=None, description="A system step run on this host: nothing was installed."
    )
    refreshed: bool | None = Field(
        default=None, description="A system step run on this host: the index was refreshed."
    )
    check: str | None = Field(default=None, description="A system step: its check's outcome.")


class EnsureEvent(models.ApiModel):
    """One NDJSON line: a progress event, or the final ``result``."""

    event: str = Field(
        description=(
            "plan, queued, waiting-for-lock, downloading, extracting, running, checking, "
            "output, done, failed, skipped or result"
        )
    )
    feature: str | None = None
    ok: bool | None = Field(default=None, description="result: whether every feature is ready")
    features: list[FeatureResult] | None = None
    path: list[str] | None = None
    env: dict[str, str] | None = None
    seconds: float | None = Field(
        default=None, description="done: the feature's time; result: the server's time"
    )


async def post_ensure(request: web.Request) -> web.StreamResponse:
    """Ensure features are installed; stream progress; end with the result."""
    started = time.perf_counter()
    ctx = request.app[CONTEXT]
    settings = ctx.reloader.current.settings
    body = await bodies.read_model(request, EnsureRequest)
    if not body.requests and not body.labels and body.team is None:
        raise errors.ApiError(
            400, "nothing to ensure: give requests, labels or team", code="validation_error"
        )
    if body.target_platform is not None:
        target = features.to_platform(body.target_platform)
    else:
        target = await ctx.installs.local()
    plan = (
        await features.resolve(
            request,
            target,
            labels=body.labels,
            extra=body.requests,
            team_doc=body.team,
            options=body.options,
        )
    ).to_data()
    if body.job is not None:
        # Before any lookup: an entry found after the lease exists is never evicted.
        try:
            await ctx.jobs.lease(
                layout.Store(settings.cache.root),
                plan,
                job=body.job.id,
                max_seconds=body.job.max_seconds,
            )
        except leases.LeaseRefused as exc:
            raise errors.ApiError(503, str(exc)) from exc
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    stream = _Stream(response)
    await stream.send(
        {
            "event": "plan",
            "features": [
                {"id": s["id"], "version": s["version"], "method": s["method"], "round": s["round"]}
                for s in plan["features"]
            ],
        }
    )
    outcomes = await plans.run(ctx.installs, plan, stream.send)
    final = plans.result(plan, outcomes)
    final["seconds"] = round(time.perf_counter() - started, 6)  # server time, for clients
    await stream.send(final)
    await stream.close()
    return response


class _Stream:
    """Writes NDJSON lines; a client that went away makes every later write a no-op."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.gone = False

    async def send(self, event: wire.Event) -> None:
        if self.gone:
            return
        try:
            await self.response.write((json.dumps(event, separators=(",", ":")) + "\n").encode())
        except (ConnectionError, RuntimeError):
            self.gone = True

    async def close(self) -> None:
        if not self.gone:
            try:
                await self.response.write_eof()
            except (ConnectionError, RuntimeError):
                self.gone = True
