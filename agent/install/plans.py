"""The one plan runner and the one result builder: the API, preinstall and ``runner-agent
ensure --local`` all ensure a plan here.

Policy:
- a plan (data from the catalog's resolver, typed in :mod:`agent.platform.plans`)
  installs round by round: a round only depends on the ones before it, its steps run
  concurrently through the coordinator (which bounds them by ``installer.parallelism``),
  and a failure lets its round finish and skips the rounds after it;
- every progress event is sent as it comes, then ``done``, ``failed`` or ``skipped`` per
  feature; :func:`result` turns the outcomes into the ``result`` event: per feature its
  entry, PATH entries, variables, whether it was a hit or installed, and the ``system``
  steps left for the runner; then the merged PATH and variables, absolute for this
  store's mount point (receipts keep them relative, for other mount points);
- :func:`ensure_plan` is the same runner for callers without an event loop: a plan whose
  entries are all present is answered from the warm path alone (no loop, no pool), so a
  warm ensure costs what a warm :func:`agent.install.protocol.install` costs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.config import models
from agent.install import coordinator, metrics
from agent.platform import plans as wire
from agent.store import entries, layout, locks

if TYPE_CHECKING:
    from agent.install import protocol

logger = logging.getLogger(__name__)

Send = Callable[[wire.Event], Awaitable[None]]
Outcomes = dict[str, "coordinator.Outcome | BaseException | None"]
"""Per feature: how it ended, the exception it failed with, or ``None`` when skipped."""

OK_RESULTS: tuple[wire.Ready, ...] = ("hit", "installed", "present", "left")


async def run(installs: coordinator.Coordinator, plan: wire.Plan, send: Send) -> Outcomes:
    """Ensure the plan's steps round by round, sending every event as it comes; the
    outcome per feature."""
    outcomes: Outcomes = {s["id"]: None for s in plan["features"]}
    queue: asyncio.Queue[wire.ProgressEvent] = asyncio.Queue()
    rounds: dict[int, list[wire.Step]] = {}
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
        tasks: dict[asyncio.Future[coordinator.Outcome], wire.Step] = {
            asyncio.ensure_future(installs.ensure_step(s, plan["platform"], queue.put_nowait)): s
            for s in rounds[number]
        }
        pending: set[asyncio.Future[coordinator.Outcome]] = set(tasks)
        while pending:
            getter = asyncio.ensure_future(queue.get())
            waiting: set[asyncio.Future[coordinator.Outcome] | asyncio.Future[wire.ProgressEvent]]
            waiting = {*pending, getter}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                await send(getter.result())
            else:
                getter.cancel()
            for task in pending & done:
                pending.discard(task)
                while not queue.empty():
                    await send(queue.get_nowait())
                failed |= await _finished(task, tasks[task], outcomes, send)
    return outcomes


async def _finished(
    task: asyncio.Future[coordinator.Outcome], step: wire.Step, outcomes: Outcomes, send: Send
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
    outcome = task.result()
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


def result(plan: wire.Plan, outcomes: Outcomes) -> wire.ResultEvent:
    """The final ``result`` event of a plan's outcomes."""
    items: list[wire.FeatureResult] = []
    path: list[str] = []
    env: dict[str, str] = {}
    for step in plan["features"]:
        outcome = outcomes[step["id"]]
        item: wire.FeatureResult = {
            "id": step["id"],
            "version": step["version"],
            "method": step["method"],
            "result": "skipped",  # unless it ran
        }
        if isinstance(outcome, BaseException):
            item["result"], item["error"] = "failed", str(outcome)
        elif outcome is not None:
            item["result"], item["seconds"] = outcome.result, round(outcome.seconds, 3)
            if outcome.installed is not None:
                item["entry"] = str(outcome.installed.entry.path)
                item["path"], item["env"] = entries.exported(outcome.installed)
            elif outcome.system is not None:  # run on this host: the manager's report
                report = outcome.system
                item["manager"] = report["manager"]
                item["already_present"] = report["already_present"]
                item["refreshed"] = report["refreshed"]
                item["check"] = report["check"]
            elif outcome.result == "left" and step["method"] == "system":
                item["steps_left"] = step["actions"]
            path += item.get("path", [])
            env.update(item.get("env", {}))
        items.append(item)
    ok = all(i["result"] in OK_RESULTS for i in items)
    return {"event": "result", "ok": ok, "features": items, "path": path, "env": env}


async def preinstall(installs: coordinator.Coordinator, plan: wire.Plan) -> tuple[bool, str]:
    """Ensure ``plan`` at startup (``features.preinstall``); whether it all worked, and
    a line for the ``preinstall`` readiness condition."""

    async def log(event: wire.Event) -> None:
        if event["event"] in ("done", "failed"):
            logger.info("preinstall: %s %s", event.get("feature"), event["event"], extra=event)

    outcome = result(plan, await run(installs, plan, log))
    failed = [f for f in outcome["features"] if f["result"] in ("failed", "skipped")]
    if failed:
        first = failed[0]
        return False, f"{first['id']} {first['result']}: {first.get('error') or 'see the log'}"
    names = ", ".join(f"{f['id']} {f['version']}" for f in outcome["features"])
    return True, f"ready: {names}" if names else "nothing to preinstall"


# --- without an event loop ----------------------------------------------------------------


@dataclass
class Ensured:
    """What :func:`ensure_plan` ensured: the ``result`` event, and the ready entries in
    plan order."""

    result: wire.ResultEvent
    installed: list[entries.Installed]

    @property
    def path(self) -> list[str]:
        """The merged PATH entries to export."""
        return list(self.result["path"])

    @property
    def vars(self) -> dict[str, str]:
        """The merged variables to export."""
        return dict(self.result["env"])


def ensure_plan(
    store: layout.Store,
    plan: wire.Plan,
    *,
    settings: models.Settings | None = None,
    lock_backend: locks.LockBackend | None = None,
    options: protocol.Options | None = None,
    parallelism: int | None = None,
    host_system: bool = False,
    on_event: Callable[[wire.Event], None] | None = None,
) -> Ensured:
    """Ensure ``plan`` from a caller without an event loop (blocking); the first failure
    is raised, after its round settles.

    ``settings`` default to the built-in ones on ``store``; ``lock_backend``, ``options``
    and ``parallelism`` override theirs. ``system`` steps run on this host only with
    ``host_system``; without it they are an error, since nobody would run them.
    """
    steps = plan["features"]
    if not host_system:
        for step in steps:
            if step["method"] == "system":
                raise layout.StoreError(
                    f"{step['id']} installs OS packages, which only host mode runs; install "
                    "it on the runner (runner-agent ensure on that host) or choose another "
                    "method"
                )
    warm = _warm(store, plan)
    if warm is not None:
        return warm
    effective = _settings_for(store, settings, lock_backend, parallelism)
    installs = coordinator.Coordinator(
        lambda: effective,
        metrics.InstallMetrics(None),
        pool=lambda: _in_process(lock_backend),
        host_system=host_system,
        options=(lambda _native: options) if options is not None else None,
    )

    async def send(event: wire.Event) -> None:
        if on_event is not None:
            on_event(event)

    async def main() -> Outcomes:
        try:
            return await run(installs, plan, send)
        finally:
            await installs.close()

    outcomes = asyncio.run(main())
    for step in steps:
        outcome = outcomes[step["id"]]
        if isinstance(outcome, BaseException):
            raise outcome
    return Ensured(result(plan, outcomes), _ready(plan, outcomes))


def _warm(store: layout.Store, plan: wire.Plan) -> Ensured | None:
    """The plan's outcome when every entry is already complete, else ``None``."""
    tools = [step for step in plan["features"] if step["method"] != "system"]
    if len(tools) < len(plan["features"]):
        return None
    store.open()
    outcomes: Outcomes = {}
    for step in tools:
        found = entries.find(store, step)
        if found is None:
            return None
        outcomes[step["id"]] = coordinator.Outcome(step, "hit", found)
    return Ensured(result(plan, outcomes), _ready(plan, outcomes))


def _ready(plan: wire.Plan, outcomes: Outcomes) -> list[entries.Installed]:
    ready = []
    for step in plan["features"]:
        outcome = outcomes[step["id"]]
        if isinstance(outcome, coordinator.Outcome) and outcome.installed is not None:
            ready.append(outcome.installed)
    return ready


def _settings_for(
    store: layout.Store,
    settings: models.Settings | None,
    lock_backend: locks.LockBackend | None,
    parallelism: int | None,
) -> models.Settings:
    base = settings or models.Settings()
    cache: dict[str, object] = {"root": store.root}
    if isinstance(lock_backend, locks.LeaseLocks):
        cache.update(lock_backend="lease", lease_seconds=lock_backend.ttl)
    elif lock_backend is not None:
        cache.update(lock_backend="posix")
    installer: dict[str, object] = {}
    if parallelism is not None:
        installer["parallelism"] = parallelism
    return base.model_copy(
        update={
            "cache": base.cache.model_copy(update=cache),
            "installer": base.installer.model_copy(update=installer),
        }
    )


def _in_process(backend: locks.LockBackend | None) -> coordinator.Pool:
    from agent.install import inprocess  # only a cold ensure needs it

    return inprocess.InProcess(backend=backend)
