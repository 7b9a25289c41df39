"""The ensure coordinator: one install per entry inside this agent, however many ask.

Policy:
- a request for an entry that is already being installed joins that install (it gets
  the same progress events from then on, and the same outcome): identical requests
  coalesce, inside one agent; across agents the store's lock does the same job;
- an install runs as a task of its own, not of the request that started it: a client
  that disconnects stops hearing about it, but every other requester still gets it;
- cache hits are answered at once (a lookup in a thread: two ``stat()`` calls); real
  installs run at most ``installer.parallelism`` at a time, each in a worker process
  (:mod:`agent.install.workers`), so the event loop never waits on the disk, the network
  or the GIL; the bound is read at every install, so a reload that changes it applies
  to the installs that start after it (those running go on);
- ``system`` steps run here only when ``installer.system_packages`` is ``host`` (the
  agent runs on the job's machine); in a sidecar they are handed back to the runner as
  steps left to run;
- progress comes from the store through :mod:`agent.kits.progress` and is forwarded,
  thread-safely, to every listener of the install, and into the install metrics;
- the daemon builds one coordinator and closes it at shutdown; the CLI's ``ensure
  --local`` builds one on an in-process pool (:class:`~agent.install.inprocess.InProcess`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from agent.config import installer, models
from agent.install import metrics as install_metrics
from agent.kits import progress
from agent.platform import detect, model
from agent.platform import plans as wire
from agent.store import entries, layout, locks

if TYPE_CHECKING:
    # Loaded on the first install, in a thread (see Coordinator._engine): fetching,
    # extraction, the methods and the worker pool are ~3 MiB that an agent whose every
    # request is a cache hit never needs, and the loop must not pay their import.
    from agent.install import protocol

logger = logging.getLogger(__name__)

Listener = Callable[[wire.ProgressEvent], None]
Result = wire.Ready


class Pool(Protocol):
    """Where installs run: :class:`~agent.install.workers.WorkerPool` (processes) in the
    daemon, :class:`~agent.install.inprocess.InProcess` (threads) in the CLI."""

    async def install(
        self,
        root: str,
        step: wire.ToolStep,
        *,
        lock: tuple[str, float],
        options: protocol.Options,
        listener: progress.Listener,
    ) -> entries.Installed:
        """Install ``step`` into the store at ``root``; progress to ``listener`` (from any
        thread)."""
        ...

    def close(self) -> None:
        """Stop now; installs still running are ended (they are crash-safe)."""
        ...


class Stopping(RuntimeError):
    """The agent is stopping: the install did not start. The next agent installs it."""


class Slots:
    """A FIFO semaphore whose size is read live: lowering it lets the holders finish,
    raising it admits waiters at once (:meth:`wake`).

    A slot is handed to the first waiter when it frees (the waker counts it held), so a
    newcomer never overtakes a waiter, and a waiter cancelled after it was handed one
    passes it on: no wakeup is lost.
    """

    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size
        self.held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``."""
        if self._waiters or self.held >= self._limit():
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed a slot: pass it on
                    self._release()
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        else:
            self.held += 1
        try:
            yield
        finally:
            self._release()

    @property
    def waiting(self) -> int:
        """Acquirers queued for a slot."""
        return len(self._waiters)

    def admit_all(self) -> None:
        """Hand every waiter a slot at once, whatever the size (the owner is stopping,
        and each of them ends as soon as it holds one)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.held += 1
                waiter.set_result(None)

    def wake(self) -> None:
        """Hand free slots to the waiters, first come first served (call after the
        size grew)."""
        while self._waiters and self.held < self._limit():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.held += 1
                waiter.set_result(None)

    def _limit(self) -> int:
        return max(1, self._size())

    def _release(self) -> None:
        self.held -= 1
        self.wake()


@dataclass
class Outcome:
    """What ensuring one step came to."""

    step: wire.Step
    result: Result
    installed: entries.Installed | None = None
    system: wire.SystemReport | None = None
    seconds: float = 0.0


@dataclass
class _Job:
    future: asyncio.Future[Outcome]
    listeners: list[Listener] = field(default_factory=list)

    def publish(self, event: wire.ProgressEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # one bad listener must not starve the others
                logger.exception("an ensure progress listener failed")


class Coordinator:
    """Coalesces and runs installs for the API, preinstall and ``ensure --local``."""

    def __init__(
        self,
        settings: Callable[[], models.Settings],
        metrics: install_metrics.InstallMetrics,
        *,
        pool: Callable[[], Pool] | None = None,
        host_system: bool | None = None,
        options: Callable[[bool], protocol.Options] | None = None,
        cuda_driver: Callable[[], str | None] = lambda: None,
    ) -> None:
        """``pool`` makes the pool on first use (default: worker processes, as many as
        ``installer.parallelism`` may ever allow, spawned on demand); ``host_system``
        overrides ``installer.system_packages == "host"`` (the CLI decides per target);
        ``options`` (given whether the target is this machine) overrides those of the
        ``installer`` settings (tests and benches); ``cuda_driver`` is the CUDA version
        this machine's NVIDIA driver runs (the GPU engine's; ``None``: no GPU)."""
        self._settings = settings
        self._cuda_driver = cuda_driver
        self._metrics = metrics
        self._make_pool = pool or _worker_pool
        self._host_system = host_system
        self._own_options = options is None  # given options decide the check themselves
        self._options = options or (
            lambda native: _options_from(self._settings().installer, native=native)
        )
        self._engine_loaded = False
        self._closing = False
        self._jobs: dict[str, _Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.slots = Slots(lambda: self._settings().installer.parallelism)
        self._local: model.Platform | None = None
        self._pool: Pool | None = None

    def reconfigured(self) -> None:
        """The settings changed: a larger ``installer.parallelism`` admits waiting
        installs now (a smaller one takes effect as running ones finish)."""
        self.slots.wake()

    @property
    def running(self) -> int:
        """Installs in progress (coalesced requests count once)."""
        return len(self._jobs)

    async def ensure_step(
        self, step: wire.Step, platform: wire.PlatformData, listener: Listener
    ) -> Outcome:
        """Make ``step`` present (joining an install already running for it, unless a
        lock file pins other bytes for it: that one waits for the entry, then refuses
        it if it is not made from them)."""
        key = step["prefix"] or f"system:{step['id']}"
        if step["method"] != "system":
            key += "".join(f"#{sha}" for sha in entries.pinned(step))
        job = self._jobs.get(key)
        if job is None:
            job = _Job(asyncio.get_running_loop().create_future())
            self._jobs[key] = job
            task = asyncio.create_task(self._run(key, job, step, platform), name=f"ensure {key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        job.listeners.append(listener)
        try:
            return await asyncio.shield(job.future)
        finally:
            with contextlib.suppress(ValueError):
                job.listeners.remove(listener)

    async def close(self) -> None:
        """Stop: installs still queued do not start (:class:`Stopping`), the worker
        processes go at once (an install is crash-safe, and the next one finishes it),
        then the tasks that waited for them end. The caller bounds the wait (a host
        package install runs in a thread, to its own timeout)."""
        self._closing = True
        self.slots.admit_all()
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, key: str, job: _Job, step: wire.Step, platform: wire.PlatformData) -> None:
        try:
            outcome = await self._ensure(job, step, platform)
        except BaseException as exc:
            job.future.set_exception(exc)
            job.future.exception()  # retrieved: a job nobody waits for any more is fine
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            job.future.set_result(outcome)
        finally:
            self._jobs.pop(key, None)

    async def _ensure(self, job: _Job, step: wire.Step, platform: wire.PlatformData) -> Outcome:
        settings = self._settings()
        started = time.monotonic()
        if step["method"] == "system":
            host = self._host_system
            if host is None:
                host = settings.installer.system_packages == "host"
            if not host:
                return Outcome(step, "left")
            listen, _ = self._listener(job, step)
            await self._engine()
            async with self.slots():
                self._refuse_if_closing(step)
                system = await asyncio.to_thread(self._system, settings, step, listen)
            result: Result = "present" if system["already_present"] else "installed"
            return Outcome(step, result, system=system, seconds=time.monotonic() - started)
        store = layout.Store(settings.cache.root)
        hit = await asyncio.to_thread(_lookup, store, step)
        if hit is not None:
            self._metrics.cache_requests.labels("hit").inc()
            return Outcome(step, "hit", hit, seconds=time.monotonic() - started)
        self._metrics.cache_requests.labels("miss").inc()
        await self._engine()
        async with self.slots():
            self._refuse_if_closing(step)
            options = self._options(await self._native(platform) if self._own_options else True)
            listen, finish = self._listener(job, step)
            try:
                install: wire.ToolStep = {**step, "platform": platform}
                done = await self._workers().install(
                    str(settings.cache.root),
                    install,
                    lock=(settings.cache.lock_backend, settings.cache.lease_seconds),
                    options=options,
                    listener=listen,
                )
            except Exception:
                self._metrics.installs.labels(step["id"], step["method"], "failed").inc()
                raise
            finally:
                finish()
        seconds = time.monotonic() - started
        if not done.cached:
            self._metrics.installs.labels(step["id"], step["method"], "ok").inc()
            self._metrics.install_duration.labels(step["method"]).observe(seconds)
        return Outcome(step, "hit" if done.cached else "installed", done, seconds=seconds)

    def _refuse_if_closing(self, step: wire.Step) -> None:
        if self._closing:
            raise Stopping(
                f"{step['id']} {step['version']} was not installed: the agent is stopping"
            )

    async def _engine(self) -> None:
        """Import the install machinery once, in a thread, before the first install
        (the worker pool's too, when it is the default one)."""
        if not self._engine_loaded:
            await asyncio.to_thread(_load_engine, self._make_pool is _worker_pool)
            self._engine_loaded = True

    def _workers(self) -> Pool:
        if self._pool is None:
            self._pool = self._make_pool()
        return self._pool

    async def local(self) -> model.Platform:
        """The platform the agent runs on (detected once, in a thread), with the driver's
        CUDA as the GPU engine reads it now."""
        if self._local is None:
            self._local = await asyncio.to_thread(detect.detect)
        driver = self._cuda_driver()
        if driver != self._local.cuda_driver:
            return dataclasses.replace(self._local, cuda_driver=driver)
        return self._local

    async def _native(self, platform: wire.PlatformData) -> bool:
        return model.same_machine(platform, await self.local())

    def _listener(self, job: _Job, step: wire.Step) -> tuple[progress.Listener, Callable[[], None]]:
        """Forward a thread's progress events to the loop, and count bytes and waits;
        the second callable ends a wait still open when the install returns (the entry
        appeared while it waited, so no other event followed)."""
        loop = asyncio.get_running_loop()
        seen: dict[str, int] = {}
        waiting: list[float] = []

        def on_loop(event: str, data: dict[str, Any]) -> None:
            if event == "waiting-for-lock" and not waiting:
                waiting.append(time.monotonic() - float(data.get("waited", 0)))
            elif event != "waiting-for-lock" and waiting:
                self._metrics.lock_wait.observe(time.monotonic() - waiting.pop())
            if event == "downloading":
                url, count = str(data.get("url")), int(data.get("bytes", 0))
                self._metrics.download_bytes.inc(max(0, count - seen.get(url, 0)))
                seen[url] = count
            # The store's events are loose data (agent.kits.progress): typed from here on.
            job.publish(cast(wire.ProgressEvent, {"event": event, "feature": step["id"], **data}))

        def listen(event: str, data: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(on_loop, event, data)

        def finish() -> None:
            if waiting:
                self._metrics.lock_wait.observe(time.monotonic() - waiting.pop())

        return listen, finish

    def _system(
        self, settings: models.Settings, step: wire.SystemStep, listen: progress.Listener
    ) -> wire.SystemReport:
        backend = locks.backend(settings.cache.lock_backend, lease_ttl=settings.cache.lease_seconds)
        policy = self._options(True).policy
        from agent.install.host import wiring  # in this thread: see _engine

        install = wiring.system_installer(settings, backend=backend, policy=policy)
        with progress.listening(listen):
            return install(step)


def _lookup(store: layout.Store, step: wire.ToolStep) -> entries.Installed | None:
    store.open()
    return entries.find(store, step)


def _options_from(settings: models.InstallerSettings, *, native: bool) -> protocol.Options:
    from agent.install import protocol  # loaded by _engine before any install asks

    return protocol.options_from(settings, native=native)


def _worker_pool() -> Pool:
    from agent.install import workers

    return workers.WorkerPool(installer.MAX_PARALLELISM)


def _load_engine(worker_pool: bool) -> None:
    from agent.install import protocol  # noqa: F401

    if worker_pool:
        from agent.install import workers  # noqa: F401
