"""The job routes: a job's start (its features ensured, streamed into the job log), its
completion, and the jobs open now. The engine is :mod:`agent.jobs.registry`.

Policy:
- ``POST /v1/jobs`` is what the job-started hook calls. Everything that can be wrong
  (body, labels, resolution, a runner already busy) is answered before the stream as a
  JSON error; the stream then opens with the ``job`` event (the job's id and secret, the
  store as the agent sees it, each feature's check and writable homes), followed by the
  events of ``POST /v1/ensure``;
- the requests of a job are the runner's menu (``runner.labels``) and the hook's own;
  explicit ensure steps add theirs later through ``POST /v1/ensure`` with the job;
- completing needs the job's secret, or a presented admin token (an operator clearing a
  runner whose completed hook never ran).
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from aiohttp import web
from pydantic import Field

from agent.catalog import loading as catalog_loading
from agent.http import auth, bodies, errors, features, gpu, models, streaming
from agent.http.context import CONTEXT, Context
from agent.jobs import leases, registry
from agent.platform import plans as wire
from agent.sources import teamfiles
from agent.store import layout

_PRINTABLE = r"^[\x20-\x7e]+$"
_SECRET = r"^[\x21-\x7e]+$"  # noqa: S105 (a pattern, not a secret)
JOB_ID = r"^j-[0-9a-f]{16}$"


class JobRef(models.ApiRequest):
    """A job this agent serves, and the secret that proves the caller is that job."""

    id: str = Field(pattern=JOB_ID, description="The job's id, from the job event.")
    secret: str = Field(
        min_length=1, max_length=200, pattern=_SECRET, description="The job's secret."
    )


class GpusModel(models.ApiRequest):
    """The GPUs the runner's container sees, from its NVIDIA_VISIBLE_DEVICES."""

    kind: registry.GpuKind = Field(
        description="all, none, void, list (devices names them) or unset (CDI, or no runtime)"
    )
    devices: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Indices (0), UUIDs (GPU-...) or MIG devices (MIG-..., 0:1).",
    )


class JobStartRequest(models.ApiRequest):
    """POST /v1/jobs: the runner's job-started hook."""

    runner_name: str = Field(min_length=1, max_length=200, pattern=_PRINTABLE)
    run_id: str = Field(pattern=r"^[0-9]{1,20}$", description="GITHUB_RUN_ID")
    run_attempt: int = Field(default=1, ge=1, le=10000, description="GITHUB_RUN_ATTEMPT")
    job: str = Field(min_length=1, max_length=200, pattern=_PRINTABLE, description="GITHUB_JOB")
    repository: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$"
    )
    workflow: str | None = Field(default=None, max_length=300, pattern=_PRINTABLE)
    workflow_ref: str | None = Field(default=None, max_length=1000, pattern=_PRINTABLE)
    sha: str | None = Field(default=None, pattern=r"^[0-9a-f]{7,64}$")
    event_name: str | None = Field(default=None, max_length=100, pattern=_PRINTABLE)
    claim: str = Field(
        pattern=r"^[A-Za-z0-9_-]{32,128}$",
        description=(
            "A random value the hook makes once per job start: a re-post with the same "
            "claim resumes the same job."
        ),
    )
    platform: features.TargetModel | None = Field(
        default=None, description="The runner's platform. Default: the agent's own."
    )
    gpus: GpusModel | None = None
    requests: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Requests beyond the runner's menu, without the prefix: node@20.",
    )
    supersede: JobRef | None = Field(
        default=None,
        description="The runner's previous job, whose completed hook never ran: it ends first.",
    )


class CheckModel(models.ApiModel):
    """A feature's check, for the hook to run again in the runner."""

    argv: list[str]
    expect: str


class JobEvent(models.ApiModel):
    """The first line of a job's stream."""

    event: Literal["job"] = "job"
    id: str
    secret: str | None = Field(
        default=None, description="POST /v1/jobs only: keep it to complete the job."
    )
    resumed: bool = Field(default=False, description="An open job was resumed (same claim).")
    store: str = Field(description="The store's root as the agent sees it.")
    checks: dict[str, CheckModel] = Field(default_factory=dict)
    homes: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict,
        description="Per feature, the writable-home variables and the folders below each for PATH.",
    )
    sources: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "POST /v1/jobs: where the job's requests came from (runner menu, job labels, "
            "team config, requests), for the job's log."
        ),
    )
    warnings: list[str] = Field(
        default_factory=list, description="What the job's log should warn of."
    )


class JobCompleteRequest(models.ApiRequest):
    """POST /v1/jobs/{id}/complete: the runner's job-completed hook."""

    secret: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=_SECRET,
        description="The job's secret; may be left out with a presented admin token.",
    )
    result: Literal["succeeded", "failed", "cancelled", "unknown"] = "unknown"
    seconds: float | None = Field(default=None, ge=0, le=1e7, description="The job's duration.")


class JobCompleted(models.ApiModel):
    """The outcome of POST /v1/jobs/{id}/complete."""

    id: str
    state: Literal["completed"] = "completed"
    result: str
    released: int = Field(description="How many leases of the job this agent released.")
    already: bool = Field(description="The job had already ended.")


class JobInfo(models.ApiModel):
    """A job this agent serves."""

    id: str
    runner_name: str
    repository: str | None
    workflow: str | None
    workflow_ref: str | None
    job: str
    run_id: str
    run_attempt: int
    event_name: str | None
    state: registry.State
    created: models.Timestamp
    setup_seconds: float | None
    requests: list[str]
    gpus: GpusModel | None


class CurrentJobs(models.ApiModel):
    """GET /v1/jobs/current."""

    jobs: list[JobInfo]


def job_error(exc: registry.JobError) -> errors.ApiError:
    """The API's answer to a refused job request."""
    if isinstance(exc, registry.UnknownJob):
        return errors.ApiError(404, str(exc), code="unknown_job")
    if isinstance(exc, registry.WrongSecret):
        return errors.ApiError(403, str(exc), code="wrong_secret")
    if isinstance(exc, registry.TooManyJobs):
        return errors.ApiError(503, str(exc), code="too_many_jobs")
    if isinstance(exc, registry.Stopping):
        return errors.ApiError(503, str(exc), code="stopping")
    if isinstance(exc, registry.UnknownRunner):
        return errors.ApiError(403, str(exc), code="unknown_runner")
    if isinstance(exc, registry.RunnerBusy):
        return errors.ApiError(
            409,
            str(exc),
            code="runner_busy",
            details={"job": exc.job.id, "runner_name": exc.job.spec.runner_name},
        )
    return errors.ApiError(409, str(exc), code="job_ended")


def job_event(
    catalog: catalog_loading.Catalog | None,
    store: str,
    plan: wire.Plan,
    job: registry.Job,
    *,
    secret: bool,
    resumed: bool = False,
) -> JobEvent:
    """The ``job`` event for ``plan``: what the hook needs beyond the ensure events."""
    homes: dict[str, dict[str, list[str]]] = {}
    checks: dict[str, CheckModel] = {}
    for step in plan["features"]:
        check = step["check"]
        if check is not None:
            checks[step["id"]] = CheckModel(argv=check["argv"], expect=check["expect"])
        feature = catalog.features.get(step["id"]) if catalog is not None else None
        if feature is not None and feature.writable_homes:
            homes[step["id"]] = {k: list(v) for k, v in feature.writable_homes.items()}
    return JobEvent(
        id=job.id,
        secret=job.secret if secret else None,
        resumed=resumed,
        store=store,
        checks=checks,
        homes=homes,
    )


def _menu(labels: list[str]) -> list[str]:
    return [label[len("feature:") :] for label in labels if label.lower().startswith("feature:")]


async def post_job(request: web.Request) -> web.StreamResponse:
    """Open (or resume) a job, ensure its features and stream the progress."""
    started = time.perf_counter()
    ctx = request.app[CONTEXT]
    settings = ctx.reloader.current.settings
    body = await bodies.read_model(request, JobStartRequest)
    if body.platform is not None:
        target = features.to_platform(body.platform)
    else:
        target = await ctx.installs.local()
    target = await gpu.with_driver(ctx, target, body.gpus.kind if body.gpus else None)
    try:
        ctx.jobs.admits(body.runner_name)  # before any GitHub request is spent on it
    except registry.JobError as exc:
        raise job_error(exc) from exc
    gpus = body.gpus
    kind, devices = (gpus.kind, list(gpus.devices)) if gpus is not None else (None, [])
    gpu.refuse_if_unhealthy(ctx, kind, devices)
    menu = list(settings.runner.labels)
    sources: dict[str, list[str]] = {"runner menu": _menu(menu)}
    warnings: list[str] = []
    team_doc = None
    lock = None
    github = settings.github
    budget = github.request_timeout_seconds * github.max_attempts
    # Without GitHub the repository is the hook's word (docs/jobs.md: one trust domain
    # per agent); with it, only a job GitHub shows running here in it is trusted.
    trusted = True
    github_job_id = 0
    if ctx.job_labels is not None and github.configured and body.repository:
        running = await teamfiles.running_job(ctx.job_labels, body, seconds=budget, warn=warnings)
        trusted = running is not None
        github_job_id = running.job_id if running is not None else 0
        if running is not None and _menu(list(running.labels)):
            # The job named its features: it gets those, not the whole menu.
            menu = list(running.labels)
            sources = {"job labels": _menu(menu)}
    if ctx.team_configs is not None and github.configured and body.repository and body.sha:
        # The lock sits beside the team file: both are read at the job's commit, together.
        team_doc, lock = await asyncio.gather(
            teamfiles.at_commit(ctx.team_configs, body.repository, body.sha, seconds=budget),
            teamfiles.lock_at_commit(ctx.team_configs, body.repository, body.sha, seconds=budget),
        )
        named = team_doc.get("features") if team_doc is not None else None
        if team_doc is not None:
            sources["team config"] = [str(f) for f in named][:50] if isinstance(named, list) else []
        if lock is not None:
            sources["lock"] = sorted({f"{i}@{v}" for i, v, _, _ in lock.entries()})[:50]
    if body.requests:
        sources["requests"] = list(body.requests)
    # Resolved before the job opens: a bad request leaves nothing open behind it.
    plan = (
        await features.resolve(
            request,
            target,
            labels=menu,
            extra=body.requests,
            team_doc=team_doc,
            policy_for=body.repository if trusted else None,
            lock=lock,
        )
    ).to_data()
    spec = registry.JobSpec(
        runner_name=body.runner_name,
        run_id=body.run_id,
        run_attempt=body.run_attempt,
        job=body.job,
        repository=body.repository,
        workflow=body.workflow,
        workflow_ref=body.workflow_ref,
        sha=body.sha,
        event_name=body.event_name,
        trusted=trusted,
        github_job_id=github_job_id,
        gpus=registry.Gpus(body.gpus.kind, tuple(body.gpus.devices)) if body.gpus else None,
    )
    supersede = (body.supersede.id, body.supersede.secret) if body.supersede else None
    try:
        opened = await ctx.jobs.start(
            spec, claim=body.claim, requests=_menu(menu) + body.requests, supersede=supersede
        )
    except registry.JobError as exc:
        raise job_error(exc) from exc
    gpu.job_opened(ctx, body.runner_name, kind, devices)
    if opened.superseded is not None:
        await _finished(ctx, opened.superseded)
    job = opened.job
    store = settings.cache.root
    stream = await streaming.open_stream(request)
    event = job_event(ctx.catalog(), str(store), plan, job, secret=True, resumed=opened.resumed)
    event = event.model_copy(update={"sources": sources, "warnings": warnings})
    await stream.send_model(event)
    try:
        # Before any lookup: an entry found after the lease exists is never evicted. After
        # the job event: a refused lease fails the job's features, and the hook, which
        # holds the secret by now, completes the job, rather than retrying a job start.
        await ctx.jobs.lease(job, layout.Store(store), plan)
    except leases.LeaseRefused as exc:
        final = await streaming.refuse_plan(plan, stream, str(exc), started)
    else:
        final = await streaming.run_plan(ctx.installs, plan, stream, started)
    ctx.jobs.setup_done(job, seconds=final.get("seconds", 0.0))
    await stream.close()
    return stream.response


async def complete_job(request: web.Request) -> web.Response:
    """End a job: release its leases; its runner may start the next one."""
    ctx = request.app[CONTEXT]
    body = await bodies.read_model(request, JobCompleteRequest)
    secret = body.secret
    if secret is None and not auth.presents(request, "admin", lambda: ctx.reloader.current):
        raise errors.ApiError(
            403,
            "completing a job needs its secret (the job-started hook's answer), or an admin "
            "token presented as 'Authorization: Bearer <token>'",
            code="wrong_secret",
        )
    try:
        done = await ctx.jobs.complete(
            request.match_info["id"], secret, body.result, seconds=body.seconds
        )
    except registry.JobError as exc:
        raise job_error(exc) from exc
    await _finished(ctx, done.job)
    return bodies.json_response(
        JobCompleted(
            id=done.job.id,
            result=done.job.result or body.result,
            released=done.released,
            already=done.already,
        )
    )


async def _finished(ctx: Context, job: registry.Job) -> None:
    """Tell the GitHub sources the runner finished its GitHub job: a reused runner's next
    job of the same run must not be answered with it."""
    spec = job.spec
    if ctx.job_labels is not None and spec.github_job_id and spec.repository:
        await ctx.job_labels.finished(
            spec.repository, spec.run_id, spec.run_attempt, spec.runner_name, spec.github_job_id
        )


async def current_jobs(request: web.Request) -> web.Response:
    """The jobs open now, oldest first."""
    jobs = request.app[CONTEXT].jobs.current()
    return bodies.json_response(CurrentJobs(jobs=[_info(j) for j in jobs]))


def _info(job: registry.Job) -> JobInfo:
    spec = job.spec
    gpus = GpusModel(kind=spec.gpus.kind, devices=list(spec.gpus.devices)) if spec.gpus else None
    return JobInfo(
        id=job.id,
        runner_name=spec.runner_name,
        repository=spec.repository,
        workflow=spec.workflow,
        workflow_ref=spec.workflow_ref,
        job=spec.job,
        run_id=spec.run_id,
        run_attempt=spec.run_attempt,
        event_name=spec.event_name,
        state=job.state,
        created=job.created,
        setup_seconds=job.setup_seconds,
        requests=job.requests,
        gpus=gpus,
    )
