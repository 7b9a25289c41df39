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

import asyncio
import time
from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field

from agent.http import auth, bodies, errors, features, gpu, jobs, models, streaming
from agent.http.context import CONTEXT
from agent.jobs import leases, registry
from agent.platform import plans as wire
from agent.sources import resolution, teamfiles
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
    lock: wire.JsonObject | None = Field(
        default=None,
        description=(
            "A .github/runner-agent.lock document, as JSON: the versions and artifacts to "
            "install (runner-agent features lock writes it)."
        ),
    )
    target_platform: features.TargetModel | None = Field(
        default=None, description="The job's platform. Default: the agent's own."
    )
    options: dict[str, Annotated[dict[str, str], Field(max_length=64)]] = Field(
        default_factory=dict,
        max_length=32,
        description="Options per requested feature: {feature: {option: value}}, at most 64 each.",
    )
    team_yaml: str | None = Field(
        default=None,
        max_length=256 * 1024,
        description="A .github/runner-config.yml document as its YAML text (instead of team).",
    )
    repository: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$",
        description=(
            "The repository whose runner.policy applies (owner/name): only with the job "
            "given, and only its own."
        ),
    )
    job: jobs.JobRef | None = Field(
        default=None,
        description="Ensure on behalf of this job: its entries stay leased until it completes.",
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
    team_doc = body.team
    if body.team_yaml is not None:
        if team_doc is not None:
            raise errors.ApiError(400, "give team or team_yaml, not both", code="validation_error")
        team_doc = await asyncio.to_thread(teamfiles.team_from_yaml, body.team_yaml)
    if not body.requests and not body.labels and team_doc is None:
        raise errors.ApiError(
            400, "nothing to ensure: give requests, labels or team", code="validation_error"
        )
    if body.target_platform is not None:
        target = features.to_platform(body.target_platform)
    else:
        target = await ctx.installs.local()
    job: registry.Job | None = None
    if body.job is not None:
        try:
            job = ctx.jobs.running(body.job.id, body.job.secret)
        except registry.JobError as exc:
            raise jobs.job_error(exc) from exc
    seen = job.spec.gpus if job is not None else None
    target = await gpu.with_driver(ctx, target, seen.kind if seen is not None else None)
    admin = auth.presents(request, "admin", lambda: ctx.reloader.current)
    repository = _repository(job, body.repository)
    plan = (
        await features.resolve(
            request,
            target,
            labels=body.labels,
            extra=body.requests,
            team_doc=team_doc,
            options=body.options,
            policy_for=resolution.UNCHECKED if admin else repository,
            lock=await resolution.lock_of(body.lock, "lock"),
        )
    ).to_data()
    if job is not None:
        try:
            # Before any lookup: an entry found after the lease exists is never evicted.
            await ctx.jobs.lease(job, layout.Store(settings.cache.root), plan)
        except leases.LeaseRefused as exc:
            raise errors.ApiError(503, str(exc)) from exc
        ctx.jobs.add_requests(job, body.requests + _feature_labels(body.labels))
    stream = await streaming.open_stream(request)
    if job is not None:
        store = str(settings.cache.root)
        await stream.send_model(jobs.job_event(ctx.catalog(), store, plan, job, secret=False))
    await streaming.run_plan(ctx.installs, plan, stream, started)
    await stream.close()
    return stream.response


def _repository(job: registry.Job | None, named: str | None) -> str | None:
    """The repository whose policy applies: the job's (when policy trusts it). One named
    without its job is refused: job code holds the shared job token and could otherwise
    name any repository to pass under another's rule."""
    if job is not None:
        own = job.spec.repository
        if named is not None and (own or "").lower() != named.lower():
            raise errors.ApiError(
                403,
                f"job {job.id} is of {own or 'no repository'}, not {named}",
                code="policy",
            )
        return own if job.spec.trusted else None
    if named is not None:
        raise errors.ApiError(
            403,
            f"a request may name {named} only with its job: ensure on behalf of your job "
            "(job: {id, secret}), or present an admin token",
            code="policy",
        )
    return None


def _feature_labels(labels: list[str]) -> list[str]:
    return [label.removeprefix("feature:") for label in labels if label.startswith("feature:")]
