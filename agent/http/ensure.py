"""``POST /v1/ensure``: resolve, install what is missing, and stream progress as NDJSON.

Policy:
- everything that can be wrong with the request (body, labels, options, resolution) is
  answered before the stream starts, as an ordinary JSON error (400/422/503); once the
  stream has started the status is 200 and each line is one :class:`EnsureEvent`;
- steps install round by round (a round only depends on the ones before it), the
  steps of a round concurrently; a failure lets its round finish and skips the rest;
- the last line is always the ``result`` event: per feature its entry, PATH entries,
  variables, whether it was a cache hit or installed, and, in a sidecar, the system
  package steps left for the runner to run; then the merged PATH and variables;
- a client that goes away stops only its own stream (see :mod:`agent.http.installs`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from agent.http import bodies, errors, features, jobs, models
from agent.http.context import CONTEXT
from agent.http.installs import Installs, Outcome
from agent.platform import detect, model
from agent.store import installing

logger = logging.getLogger("agent.http")

INSTALLS = web.AppKey("installs", Installs)


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
    team: dict[str, Any] | None = Field(
        default=None, description="A .github/runner-config.yml document, as JSON."
    )
    target_platform: features.TargetModel | None = Field(
        default=None, description="The job's platform. Default: the agent's own."
    )
    options: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        max_length=32,
        description="Options per requested feature: {feature: {option: value}}.",
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
    steps_left: list[dict[str, Any]] = Field(
        default_factory=list, description="System package steps for the runner to run."
    )
    error: str | None = None


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


def _with_options(body: EnsureRequest) -> list[str]:
    wanted = list(body.requests)
    ids = [r.split("@", 1)[0].split(";", 1)[0].lower() for r in wanted]
    for feature, opts in body.options.items():
        if feature.lower() not in ids:
            raise errors.ApiError(
                400,
                f"options for {feature!r}, which is not among the requests {ids}; request "
                "it, or drop its options",
                code="validation_error",
            )
        at = ids.index(feature.lower())
        wanted[at] += "".join(f";{name}={value}" for name, value in opts.items())
    return wanted


async def _target(body: EnsureRequest, installs: Installs) -> model.Platform:
    if body.target_platform is not None:
        return features.to_platform(body.target_platform)
    return await installs.local()


async def post_ensure(request: web.Request) -> web.StreamResponse:
    """Ensure features are installed; stream progress; end with the result."""
    started = time.perf_counter()
    ctx = request.app[CONTEXT]
    settings = ctx.reloader.current.settings
    body = await bodies.read_model(
        request, EnsureRequest, limit=int(settings.server.max_request_bytes)
    )
    if not body.requests and not body.labels and body.team is None:
        raise errors.ApiError(
            400, "nothing to ensure: give requests, labels or team", code="validation_error"
        )
    target = await _target(body, request.app[INSTALLS])
    plan = features.resolve(
        request, target, labels=body.labels, extra=_with_options(body), team_doc=body.team
    ).to_data()
    if body.job is not None:
        # Before any lookup: an entry found after the lease exists is never evicted.
        await request.app[jobs.JOBS].lease(settings, plan, body.job)
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
    outcomes = await run_plan(request.app[INSTALLS], plan, stream.send)
    final = result(plan, outcomes)
    final["seconds"] = round(time.perf_counter() - started, 6)  # server time, for clients
    await stream.send(final)
    await stream.close()
    return response


class _Stream:
    """Writes NDJSON lines; a client that went away makes every later write a no-op."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.gone = False

    async def send(self, event: dict[str, Any]) -> None:
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


Send = Callable[[dict[str, Any]], Awaitable[None]]


async def run_plan(
    installs: Installs, plan: dict[str, Any], send: Send
) -> dict[str, Outcome | BaseException | None]:
    """Ensure the plan's steps round by round, sending every event as it comes; the
    outcome per feature (an exception for a failure, ``None`` when skipped)."""
    outcomes: dict[str, Outcome | BaseException | None] = {s["id"]: None for s in plan["features"]}
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    rounds: dict[int, list[dict[str, Any]]] = {}
    for step in plan["features"]:
        rounds.setdefault(step["round"], []).append(step)
    failed = False
    for number in sorted(rounds):
        if failed:
            for step in rounds[number]:
                await send({"event": "skipped", "feature": step["id"]})
            continue
        for step in rounds[number]:
            await send({"event": "queued", "feature": step["id"]})
        tasks: dict[asyncio.Future[Any], dict[str, Any]] = {
            asyncio.ensure_future(installs.ensure_step(s, plan["platform"], queue.put_nowait)): s
            for s in rounds[number]
        }
        pending = set(tasks)
        while pending:
            getter: asyncio.Future[Any] = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(pending | {getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                await send(getter.result())
            else:
                getter.cancel()
            for task in done:
                if task is getter:
                    continue
                pending.discard(task)
                while not queue.empty():
                    await send(queue.get_nowait())
                failed |= await _finished(task, tasks[task], outcomes, send)
    return outcomes


async def _finished(
    task: asyncio.Future[Any],
    step: dict[str, Any],
    outcomes: dict[str, Outcome | BaseException | None],
    send: Send,
) -> bool:
    """Record and announce how one step ended; whether it failed."""
    exc = task.exception()
    if exc is not None:
        outcomes[step["id"]] = exc
        await send(
            {
                "event": "failed",
                "feature": step["id"],
                "step": getattr(exc, "step", None),
                "error": str(exc),
            }
        )
        return True
    outcome: Outcome = task.result()
    outcomes[step["id"]] = outcome
    await send(
        {
            "event": "done",
            "feature": step["id"],
            "result": outcome.result,
            "seconds": round(outcome.seconds, 3),
        }
    )
    return False


def result(
    plan: dict[str, Any], outcomes: dict[str, Outcome | BaseException | None]
) -> dict[str, Any]:
    """The final ``result`` event of a plan's outcomes."""
    items: list[dict[str, Any]] = []
    path: list[str] = []
    env: dict[str, str] = {}
    for step in plan["features"]:
        outcome = outcomes[step["id"]]
        item: dict[str, Any] = {
            "id": step["id"],
            "version": step["version"],
            "method": step["method"],
        }
        if outcome is None:
            item["result"] = "skipped"
        elif isinstance(outcome, BaseException):
            item.update(result="failed", error=str(outcome))
        else:
            item.update(result=outcome.result, seconds=round(outcome.seconds, 3))
            if outcome.installed is not None:
                done = outcome.installed
                item["entry"] = str(done.entry.path)
                item["path"] = [
                    os.path.normpath(os.path.join(done.entry.path, rel))
                    for rel in done.receipt.env.get("path", [])
                ]
                item["env"] = {
                    name: value.replace(installing.PREFIX_VAR, str(done.entry.path))
                    for name, value in done.receipt.env.get("vars", {}).items()
                }
            elif outcome.result == "left":
                item["steps_left"] = step["actions"]
            path += item.get("path", [])
            env.update(item.get("env", {}))
        items.append(item)
    ok = all(i["result"] in ("hit", "installed", "present", "left") for i in items)
    return {"event": "result", "ok": ok, "features": items, "path": path, "env": env}


async def preinstall(installs: Installs, plan: dict[str, Any]) -> tuple[bool, str]:
    """Ensure ``plan`` at startup (``features.preinstall``); whether it all worked, and
    a line for the ``preinstall`` readiness condition."""

    async def log(event: dict[str, Any]) -> None:
        if event["event"] in ("done", "failed"):
            logger.info("preinstall: %s %s", event.get("feature"), event["event"], extra=event)

    outcome = result(plan, await run_plan(installs, plan, log))
    failed = [f for f in outcome["features"] if f["result"] in ("failed", "skipped")]
    if failed:
        first = failed[0]
        return False, f"{first['id']} {first['result']}: {first.get('error') or 'see the log'}"
    names = ", ".join(f"{f['id']} {f['version']}" for f in outcome["features"])
    return True, f"ready: {names}" if names else "nothing to preinstall"


def preinstall_plan(catalog: Any, wanted: list[str], settings: Any) -> dict[str, Any]:
    """The plan for ``features.preinstall`` on this machine (blocking: run it in a thread)."""
    from agent.catalog import requests, resolver

    parsed = [requests.parse(r, allow_ranges=True, source="features.preinstall") for r in wanted]
    plan = resolver.resolve(parsed, catalog, detect.detect(), store_root=str(settings.cache.root))
    return plan.to_data()
