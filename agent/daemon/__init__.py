"""The one owner of the agent's startup and shutdown.

Policy:
- startup order is chosen for the time to the first /healthz: load config, bind the
  probe listener, and only then build the API, start the reload watcher, the loop-lag
  probe and everything else;
- a bad configuration at startup either exits 2 with one line (``exit``, the CLI
  default) or runs on built-in defaults with /readyz false and the error in the
  ``config`` condition (``degrade``, what the chart sets), so a pod is not deleted
  and recreated in a loop;
- the API socket is retried with backoff if it cannot be bound (a volume not mounted
  yet): the agent keeps serving probes meanwhile with the ``api`` condition false;
- the first SIGTERM/SIGINT starts a graceful drain bounded by
  ``server.shutdown_grace_seconds``; a second one exits at once. Both exit 0: a sidecar
  that exits non-zero gets the runner pod deleted. SIGHUP reloads the configuration;
- every background task runs under :func:`agent.kits.aiotasks.guard`;
- the daemon owns the engines (the install coordinator, the jobs' leases, the catalog,
  the janitor, the supervisor): it builds them after the probe listener is up, tells
  them of reloads and stops them, all here; HTTP reaches them through its context;
- supervised services start once the probe listener is up; at shutdown, readiness goes
  false, then the stop gate is waited for (bounded, with the API still serving so job
  tracking can open it), then the API drains, then services stop in reverse dependency
  order within what is left of the grace. A second signal SIGKILLs them and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent import __version__
from agent.config import loading, models, reloading
from agent.daemon import chores, startup
from agent.http import connections, draining, listeners, probes
from agent.kits import aiotasks, backoff, gcpause, logs, signals
from agent.observe import conditions, looplag, metrics
from agent.services import exporting
from agent.store import exporting as cache_exporting

if TYPE_CHECKING:  # imported after the probe listener is up (see _serve_api)
    from agent.catalog import loading as catalog_loading
    from agent.github import client as github_client
    from agent.gpu import engine as gpu_engine
    from agent.http import context as http_context
    from agent.install import coordinator
    from agent.jobs import registry as jobs_registry
    from agent.kube import annotator as kube_annotator
    from agent.services import gating as services_gating
    from agent.services import supervisor as services_supervisor
    from agent.services import upstream as services_upstream
    from agent.store import janitor
    from agent.store import notes as store_notes

logger = logging.getLogger(__name__)

OnConfigError = startup.OnConfigError
EXIT_OK = 0
EXIT_CONFIG = 2


def serve(path: Path | None, *, on_config_error: OnConfigError) -> int:
    """Run the daemon until a signal stops it; return the process exit code."""
    started = time.time()
    try:
        loaded, error = startup.initial_config(path, on_error=on_config_error)
    except loading.ConfigError as exc:
        print(f"runner-agent: invalid configuration: {exc.one_line()}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(fmt=loaded.settings.logging.format, level=loaded.settings.logging.level)
    if error is not None:
        logger.error(
            "invalid configuration; running degraded on defaults, not ready, until it is fixed",
            extra={"problems": [str(p) for p in error.problems]},
        )
    daemon = Daemon(path, loaded, started=started)
    with asyncio.Runner(loop_factory=startup.loop_factory()) as runner:
        return runner.run(daemon.run())


class Daemon:
    """Listeners, background tasks and the shutdown sequence of one agent process."""

    def __init__(self, path: Path | None, loaded: reloading.Loaded, *, started: float) -> None:
        self.started = started
        self.metrics = metrics.Metrics(started=started)
        self.conditions = conditions.Conditions(self.metrics)
        self.lag = looplag.LoopLag(self.metrics)
        self.reloader = reloading.Reloader(
            path,
            loaded,
            on_swap=self._on_swap,
            on_failure=self._on_reload_failure,
            after_swap=self._load_catalog,
        )
        self.probe_port: int | None = None
        # Caps and timeouts of every listener; raises the open-files limit first.
        self._limits = connections.limits(loaded.settings.server)
        self.catalog: catalog_loading.Catalog | None = None
        """The feature catalog in force, once loaded."""
        self.installs: coordinator.Coordinator | None = None
        """The install coordinator, once the API is built."""
        self.jobs: jobs_registry.Jobs | None = None
        """The jobs engine (open jobs, their leases), once the API is built."""
        self.github: github_client.Client | None = None
        self.gpu: gpu_engine.Gpu | None = None
        """GitHub's REST client (idle unless github credentials are set)."""
        self.notes: store_notes.Notes | None = None
        """Answers left on the store for the other agents (GitHub's, today)."""
        self.annotator: kube_annotator.Annotator | None = None
        """Keeps the open job's annotations on this pod (kubernetes.annotate_pod)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._catalog_loaded = asyncio.Event()
        self._signals = 0
        self._api_runner: web.AppRunner | None = None
        self._webhook_runner: web.AppRunner | None = None
        self._api_task: asyncio.Task[None] | None = None
        self._inflight = draining.InFlight()
        self._socket: Path | None = None
        self.supervisor: services_supervisor.Supervisor | None = None
        self.upstream: services_upstream.Follower | None = None
        """What holds the stop gate for another agent's jobs (upstream.socket_path)."""
        self.metrics.registry.register(exporting.ServicesCollector(lambda: self.supervisor))
        self.cache: janitor.Janitor | None = None
        """The store's janitor, once started."""
        self.metrics.registry.register(
            cache_exporting.CacheCollector(
                lambda: self.cache, budget=lambda: int(self.settings.cache.size_budget)
            )
        )
        self._set_config_condition(loaded)
        self.metrics.config_generation.set(loaded.generation)

    # --- configuration -----------------------------------------------------------------

    @property
    def settings(self) -> models.Settings:
        """The settings in force."""
        return self.reloader.current.settings

    def _set_config_condition(self, loaded: reloading.Loaded) -> None:
        if loaded.error:
            self.conditions.set("config", ok=False, message=loaded.error)
        else:
            self.conditions.set(
                "config", ok=True, message=f"generation {loaded.generation} from {loaded.source}"
            )

    def _on_swap(self, old: reloading.Loaded, new: reloading.Loaded) -> None:
        logs.configure(fmt=new.settings.logging.format, level=new.settings.logging.level)
        self.metrics.config_generation.set(new.generation)
        self.metrics.config_reloads.inc()
        self.metrics.config_restart_required.set(1 if new.pending_restart else 0)
        self._set_config_condition(new)
        # Manifests may have changed with the folders or on disk: the reloader awaits
        # _load_catalog (after_swap) before it answers, so a reload's answer holds them.
        if self.supervisor is not None and not self._stop.is_set():
            self.supervisor.apply(dict(new.settings.services))
        if self.installs is not None:
            self.installs.reconfigured()  # installer.parallelism applies to new installs

    def _on_reload_failure(self, error: loading.ConfigError) -> None:
        self.metrics.config_reload_failures.inc()

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> int:
        """Start everything, wait for a stop signal, shut down; return the exit code."""
        server = self.settings.server
        self._install_signals()
        probe_runner = web.AppRunner(
            probes.make_app(
                m=self.metrics,
                conds=self.conditions,
                lag=self.lag,
                started=self.started,
                api_socket=server.socket_path,
            ),
            access_log=None,
            shutdown_timeout=0.25,
        )
        await probe_runner.setup()
        # Registered false before the first probe can be answered: /readyz must never be
        # 200 in the moment before the API and catalog tasks start and say where they are.
        self.conditions.set("api", ok=False, message="starting")
        full = self.settings.server.role == "full"
        if full:  # role services has no catalog and no store (see agent.config.models)
            self.conditions.set("catalog", ok=False, message="loading")
            self.conditions.set("store", ok=False, message="checking")
        if self.settings.upstream.socket_path is not None:
            self.conditions.set("upstream", ok=False, message="waiting for its first answer")
        if self.settings.services:  # the supervisor starts after the bind, in a task
            self.conditions.set("services", ok=False, message="starting")
        if full and self.settings.gpu.backend != "off":  # kept verdicts count from the start
            self.conditions.set("gpu", ok=False, message="starting")
        if self.settings.features.preinstall:  # it waits for the catalog and the API
            self.conditions.set("preinstall", ok=False, message="waiting for the catalog")
        if not await self._bind_probes(probe_runner, server.metrics_address):
            await probe_runner.cleanup()
            return EXIT_OK
        self.conditions.set("lifecycle", ok=True, message="serving")
        self.conditions.set("tasks", ok=True, message="every background task is running")
        self._spawn(self.lag.run(), "event-loop lag probe")
        self._spawn(self.reloader.run(), "config reloader")
        self._spawn(
            self.reloader.watch(interval=lambda: self.settings.server.config_poll_seconds),
            "config file watcher",
        )
        self._api_task = self._spawn(self._serve_api(), "API listener", forever=False)
        self._spawn(self._start_services(), "service supervisor start", forever=False)
        if full:
            self._spawn(self._load_catalog(), "catalog loader", forever=False)
            self._spawn(self._run_janitor(), "cache janitor")
            self._spawn(chores.watch_store(lambda: self.settings, self.conditions), "store check")
            self._spawn(self._start_gpu(), "GPU engine start", forever=False)
        if self.settings.upstream.socket_path is not None:
            self._spawn(self._follow_upstream(), "upstream jobs follower")
        logger.info(
            "runner-agent %s serving probes and metrics on %s",
            __version__,
            server.metrics_address,
            extra={"pid": os.getpid(), "port": self.probe_port},
        )
        await self._stop.wait()
        await self._shutdown(probe_runner)
        return EXIT_OK

    async def _start_services(self) -> None:
        await asyncio.to_thread(chores.preload_supervisor)
        from agent.services import supervisor as services_supervisor  # loaded: no import work

        if self._stop.is_set():
            return  # a stop signal came first: nothing to start, so nothing to stop
        if os.getpid() == 1 and self.settings.services:
            logger.warning(
                "the agent runs as PID 1 with services: orphans of a crashed service (such "
                "as dockerd's containerd) will not be reaped; run it under tini "
                "(docker --init, or tini as the image's entrypoint)"
            )
        self.supervisor = services_supervisor.Supervisor(
            dict(self.settings.services), on_change=self._services_changed
        )
        self.supervisor.start()
        if self.jobs is not None:
            self.jobs.resync_gate()  # a job that opened before the supervisor existed
        if self.upstream is not None:
            self.upstream.resync()  # and one open upstream

    def _services_changed(self) -> None:
        # The condition exists once services are configured: an agent without any keeps
        # the conditions it always had.
        sup = self.supervisor
        if sup is None or (not sup.services and "services" not in self.conditions.names()):
            return
        ok, message = sup.readiness()
        self.conditions.set("services", ok=ok, message=message)

    async def _follow_upstream(self) -> None:
        from agent.services import upstream as services_upstream

        def gate() -> services_gating.StopGate | None:
            return self.supervisor.gate if self.supervisor is not None else None

        def on_state(ok: bool, message: str) -> None:
            self.conditions.set("upstream", ok=ok, message=message)

        self.upstream = services_upstream.Follower(lambda: self.settings.upstream, gate, on_state)
        await self.upstream.run()

    async def _bind_probes(self, runner: web.AppRunner, address: str) -> bool:
        # A taken port may free up (an old agent still draining): retry with backoff
        # rather than exit, since exiting non-zero gets the pod deleted. False: stopped.
        delays = backoff.Backoff(initial=0.5, maximum=30.0)
        while not self._stop.is_set():
            try:
                _, self.probe_port = await listeners.start_tcp(runner, address, self._limits)
                return True
            except listeners.BindError as exc:
                delay = delays.next().seconds
                logger.error("%s; retrying in %.0f s", exc, delay)
            finally:
                gcpause.resume()  # startup is over for the collector, bound or not
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
        return False

    def _spawn(
        self, coro: Coroutine[Any, Any, None], name: str, *, forever: bool = True
    ) -> asyncio.Task[None]:
        self._tasks = [t for t in self._tasks if not t.done()]
        task = aiotasks.create_guarded_task(coro, name=name, forever=forever)
        if forever:
            task.add_done_callback(self._on_task_end)
        self._tasks.append(task)
        return task

    def _on_task_end(self, task: asyncio.Task[None]) -> None:
        # The guard has logged why; readiness must not claim health without the task.
        if not task.cancelled() and not self._stop.is_set():
            self.conditions.set(
                "tasks", ok=False, message=f"{task.get_name()} stopped; see the agent's log"
            )

    async def _load_catalog(self) -> None:
        if self.catalog is None:
            self.conditions.set("catalog", ok=False, message="loading")
        # Imported and loaded in a thread: importing the catalog engine builds many models,
        # and the loop must keep answering /healthz meanwhile.
        settings = self.settings.catalog
        catalog, folders = await asyncio.to_thread(chores.load_catalog, settings)
        self.catalog = catalog
        self._catalog_loaded.set()
        disabled = sorted({p.feature for p in catalog.problems})
        message = f"{len(catalog.features)} features from {len(folders)} folder(s)"
        if disabled:
            message += f"; disabled: {', '.join(disabled)} (see /v1/features)"
        self.conditions.set("catalog", ok=True, message=message)

    async def _start_gpu(self) -> None:
        # Imported in a thread after the bind, as the API is: startup pays nothing for it.
        await asyncio.to_thread(importlib.import_module, "agent.gpu.engine")
        from agent.gpu import engine as gpu_engine

        def on_health(ok: bool, message: str) -> None:
            self.conditions.set("gpu", ok=ok, message=message)

        gpu = self.gpu = gpu_engine.Gpu(
            lambda: self.settings.gpu,
            # Pod-local (the socket's folder is the pod's emptyDir): a verdict survives a
            # restart of this container, never the pod.
            state_file=self.settings.server.socket_path.parent / "gpu-health.json",
            on_health=on_health,
        )
        self.metrics.before_scrape.append(gpu.refresh)
        self.metrics.blocks.append(gpu.render)
        await gpu.start()
        if gpu.running:
            self._spawn(gpu.run(), "GPU sampler")

    async def _run_janitor(self) -> None:
        await chores.run_janitor(lambda: self.settings, self._set_cache)

    def _set_cache(self, cache: janitor.Janitor) -> None:
        self.cache = cache

    async def _preinstall(self, installs: coordinator.Coordinator) -> None:
        await self._catalog_loaded.wait()
        assert self.catalog is not None
        await chores.preinstall(lambda: self.settings, self.conditions, self.catalog, installs)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reloader.request, "SIGHUP")
        for sig in signals.take_pending():  # arrived while importing and loading
            if sig == signal.SIGHUP:
                self.reloader.request("SIGHUP")
            else:
                self._on_stop_signal(sig)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info(
                "%s received: draining for up to %.1f s (send it again to exit at once)",
                sig.name,
                self.settings.server.shutdown_grace_seconds,
            )
            self._stop.set()
            return
        logger.warning("%s received again: exiting now without draining", sig.name)
        if self.supervisor is not None:
            self.supervisor.kill_now()  # no service outlives the agent, even now
        if self.jobs is None or not self.jobs.current():
            # With jobs open the socket stays, as after a crash: an engine following this
            # agent reads a removed socket as "it stopped after its jobs" (and the next
            # start clears it).
            self._remove_socket()
        logging.shutdown()
        os._exit(EXIT_OK)

    async def _serve_api(self) -> None:
        # Imported in a thread, after the probe listener is up: the API's models cost
        # import time that /healthz must not wait for.
        await asyncio.to_thread(chores.preload_api)
        from agent.http import api, context  # loaded: no import work on the loop
        from agent.install import coordinator
        from agent.jobs import registry as jobs_registry

        server = self.settings.server
        installs = self.installs = coordinator.Coordinator(
            lambda: self.settings,
            chores.install_metrics(self.metrics.registry),
            cuda_driver=lambda: self.gpu.cuda_driver() if self.gpu is not None else None,
        )
        await self._start_annotator()
        self.jobs = jobs_registry.Jobs(
            metrics=chores.job_metrics(self.metrics.registry),
            gate=self._job_gate,
            max_seconds=lambda: self.settings.runner.job_max_seconds,
            history=lambda: self.settings.runner.history,
            max_open=lambda: self.settings.runner.max_open_jobs,
            runners=lambda: self.settings.runner.names,
            gpu_meter=lambda: self.gpu.meter if self.gpu is not None else None,
            watchers=[self.annotator] if self.annotator is not None else [],
        )
        from agent.github import client as github_client
        from agent.github import contents as github_contents
        from agent.github import joblabels as github_joblabels
        from agent.store import layout as store_layout
        from agent.store import locks as store_locks
        from agent.store import notes as store_notes

        cache = self.settings.cache  # root and lock backend: restart-required
        self.notes = store_notes.Notes(
            store_layout.Store(cache.root),
            store_locks.backend(cache.lock_backend, lease_ttl=cache.lease_seconds),
        )
        self.github = github_client.Client(lambda: self.settings)
        ctx = context.Context(
            team_configs=github_contents.TeamConfigs(self.github, self.notes),
            job_labels=github_joblabels.JobLabels(self.github, self.notes),
            reloader=self.reloader,
            conditions=self.conditions,
            started=self.started,
            installs=installs,
            jobs=self.jobs,
            catalog=lambda: self.catalog,
            services=lambda: self.supervisor,
            cache=lambda: self.cache,
            gpu=lambda: self.gpu,
        )
        runner = web.AppRunner(
            api.make_app(ctx, m=self.metrics, inflight=self._inflight, role=server.role),
            access_log=None,
            shutdown_timeout=0.25,  # requests are drained before cleanup; see _shutdown
        )
        await runner.setup()
        self._api_runner = runner
        if self.settings.features.preinstall:
            self._spawn(self._preinstall(installs), "preinstall", forever=False)
        delays = backoff.Backoff(initial=1.0, maximum=30.0)
        where = str(server.socket_path)
        self.conditions.set("api", ok=False, message=f"binding {where}")
        while True:
            try:
                await listeners.start_unix(
                    runner, server.socket_path, group=server.socket_group, limits=self._limits
                )
                self._socket = server.socket_path
                break
            except listeners.BindError as exc:
                delay = delays.next().seconds
                self.conditions.set("api", ok=False, message=f"{exc}; retrying in {delay:.0f} s")
                await asyncio.sleep(delay)
        if server.api_tcp_address:
            try:
                await listeners.start_tcp(runner, server.api_tcp_address, self._limits)
                where += f" and {server.api_tcp_address}"
            except listeners.BindError as exc:
                self.conditions.set("api", ok=False, message=str(exc))
                return
        if server.webhook_address:
            try:
                await self._serve_webhooks(ctx, server.webhook_address)
                where += f"; webhooks on {server.webhook_address}"
            except listeners.BindError as exc:
                self.conditions.set("api", ok=False, message=str(exc))
                return
        self.conditions.set("api", ok=True, message=f"serving on {where}")

    async def _start_annotator(self) -> None:
        # Built in a thread (imports, the namespace file); its worker is a task of its
        # own, so a failing API never reaches the tasks condition or /readyz.
        if not self.settings.kubernetes.annotate_pod:  # restart-required
            return
        if self.settings.server.role != "full":
            # The engine container shares the pod and opens no job: its start would
            # clear the annotations the sidecar keeps for the job running now.
            logger.info("kubernetes.annotate_pod is ignored with server.role services")
            return
        self.annotator = await asyncio.to_thread(
            chores.pod_annotator, lambda: self.settings, self.metrics.registry
        )
        if self.annotator is not None:
            self.annotator.start()

    async def _serve_webhooks(self, ctx: http_context.Context, address: str) -> None:
        # A listener of its own: GitHub reaches it from outside, the API never is.
        from agent.http import webhooks
        from agent.sources import prewarm

        assert self.installs is not None
        assert ctx.team_configs is not None
        prewarmer = prewarm.Prewarmer(
            lambda: self.settings,
            lambda: self.catalog,
            self.installs,
            ctx.team_configs,
            prewarm.PrewarmMetrics(self.metrics.registry),
        )
        hooks = webhooks.Webhooks(
            lambda: self.settings,
            prewarmer,
            webhooks.WebhookMetrics(self.metrics.registry),
            self.notes,
        )
        runner = web.AppRunner(hooks.app(), access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        self._webhook_runner = runner
        await listeners.start_tcp(runner, address, self._limits)
        self._spawn(prewarmer.run(), "pre-warmer")

    def _job_gate(self, reason: str | None) -> None:
        # Closed while a job is open: dockerd outlives the job when the agent is told to
        # stop (shutdown waits for the gate, bounded by stop.gate_max_wait_seconds).
        sup = self.supervisor
        if sup is None:
            return
        if reason is None:
            sup.gate.open("no job is open", holder="jobs")
        else:
            sup.gate.close(reason, holder="jobs")

    async def _wait_jobs(self) -> None:
        assert self.jobs is not None
        limit = self.settings.runner.shutdown_wait_seconds
        open_now = self.jobs.current()
        if not open_now or limit <= 0:
            return
        logger.info(
            "%d job(s) open: the API serves on until they complete, at most %.0f s",
            len(open_now),
            limit,
        )
        if not await self.jobs.wait_idle(limit):
            logger.warning(
                "%d job(s) still open after %.0f s; stopping anyway",
                len(self.jobs.current()),
                limit,
            )

    async def _stop_engines(self) -> None:
        # The leases first: an install still running must not hold them. Then the
        # installs: workers go at once, and an install is crash-safe (the next finishes).
        if self.jobs is not None:
            await self.jobs.close()
        if self.annotator is not None:  # bounded: kube_annotator.STOP_SECONDS
            await self.annotator.close()
        if self.installs is not None:
            await self.installs.close()
        if self.github is not None:
            await self.github.close()
        if self.gpu is not None:
            await self.gpu.close()

    def _remove_socket(self) -> None:
        # Only the socket this process bound: never another agent's.
        if self._socket is not None:
            self._socket.unlink(missing_ok=True)
            self._socket = None

    async def _shutdown(self, probe_runner: web.AppRunner) -> None:
        # Readiness goes false first, while probes still answer, so the pod is seen
        # draining; the API stops accepting, and requests already in hand finish; then
        # tasks stop; probes go last. Every step takes its time from one budget, the
        # grace, so the process is gone before the kubelet's SIGKILL.
        self.conditions.set("lifecycle", ok=False, message="shutting down")
        if self.jobs is not None:
            self.jobs.stop_accepting()  # the API serves on for open jobs, opens no new one
        if self._webhook_runner is not None:
            # No more pre-warming: a stopping agent takes no new work from outside.
            await self._webhook_runner.cleanup()
            self._webhook_runner = None
        if self._api_task is not None and not self._api_task.done():
            # Still importing or binding: it must not bind a socket (or start installs)
            # after the shutdown has passed it by. What it built is stopped below.
            self._api_task.cancel()
            await asyncio.gather(self._api_task, return_exceptions=True)
        # Before the grace starts, with the API still up: job tracking (or an operator)
        # opens the gate through it, and open jobs complete through it (an engine
        # container following them sees them end). With gated services the gate is the
        # wait (jobs hold it), bounded by theirs; without, the open jobs, by the runner's.
        if self.supervisor is not None and self.supervisor.gated():
            await self.supervisor.wait_gate()
        elif self.jobs is not None:
            await self._wait_jobs()
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + self.settings.server.shutdown_grace_seconds
        if self._api_runner is not None:
            for site in list(self._api_runner.sites):
                await site.stop()
            self._remove_socket()
            # Leave a second (or a fifth of a short grace) for the steps below.
            reserve = min(1.0, (end - start) / 5)
            if not await self._inflight.drain(deadline=end - reserve):
                logger.warning(
                    "%d API request(s) still running at the end of the grace; cutting them",
                    self._inflight.count,
                )
            await self._api_runner.cleanup()
        try:
            # Bounded: a host package install runs in a thread, to its own timeout.
            await asyncio.wait_for(
                self._stop_engines(),
                timeout=max(0.1, end - min(1.0, (end - start) / 5) - loop.time()),
            )
        except TimeoutError:
            logger.warning("installs still running at the end of the grace; leaving them")
        if self.supervisor is not None:
            # Reverse dependency order, each within its grace, all within ours; a little
            # is kept for the tasks and probes below.
            await self.supervisor.shutdown(deadline=end - min(0.5, (end - start) / 10))
        await aiotasks.stop_tasks(self._tasks, timeout=max(0.05, (end - loop.time()) / 2))
        await probe_runner.cleanup()
        logger.info("runner-agent stopped after draining for %.2f s", loop.time() - start)
