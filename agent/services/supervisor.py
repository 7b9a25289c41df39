"""The supervisor: every configured service, their order, the stop gate and readiness.

Policy:
- each service runs in its own guarded task; dependencies are honoured by the dependent
  waiting until each of its ``depends_on`` is healthy (``running``);
- a config reload is applied per service: a new service starts, a removed one stops, a
  changed spec restarts that service (a ``failed`` one is retried); unchanged ones are
  left alone;
- at agent shutdown (driven by the daemon, the one owner of shutdown) services stop in
  reverse dependency order, each level at once, each service within its own stop grace
  and all within the deadline the daemon gives; before that, if the stop gate is closed
  and a gated service is up, the daemon waits for the gate;
- readiness: every ``required_for_ready`` service must be ``running`` (its last check
  passed); the supervisor reports a verdict and a message on every change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agent.config import services as specs
from agent.services import gating, supervising

logger = logging.getLogger(__name__)


class UnknownService(LookupError):
    """No service by that name is configured."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(
            f"no service named {name!r}; configured: {', '.join(known) or 'none'} "
            "(see `runner-agent services ls`)"
        )


class Supervisor:
    """Owns the services and carries out commands and config changes."""

    def __init__(
        self,
        specs_by_name: dict[str, specs.ServiceSpec],
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.services: dict[str, supervising.Service] = {}
        self.gate = gating.StopGate()
        self._on_change = on_change
        self._changed = asyncio.Event()
        self._stopping = False
        self._retired: list[supervising.Service] = []
        """Removed by a reload and still stopping: shutdown waits for them too."""
        for name, spec in specs_by_name.items():
            self.services[name] = self._make(name, spec)

    def _make(self, name: str, spec: specs.ServiceSpec) -> supervising.Service:
        return supervising.Service(
            name,
            spec,
            notify=self._notify,
            peer_ready=self._peer_ready,
            changed=lambda: self._changed,
        )

    def _peer_ready(self, name: str) -> bool:
        peer = self.services.get(name)
        return peer is not None and peer.healthy

    def _notify(self, service: supervising.Service) -> None:
        # Wake every dependent waiting on a change, then let the daemon re-read readiness.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self._on_change is not None:
            self._on_change()

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start every service's task, dependencies first."""
        order = specs.start_order({n: s.spec for n, s in self.services.items()})
        for level in order:
            for name in level:
                self.services[name].start_task()
        if self._on_change is not None:
            self._on_change()

    def get(self, name: str) -> supervising.Service:
        """The service called ``name``, or :class:`UnknownService`."""
        service = self.services.get(name)
        if service is None:
            raise UnknownService(name, sorted(self.services))
        return service

    def apply(self, new: dict[str, specs.ServiceSpec]) -> None:
        """Bring the services in line with a reloaded configuration."""
        if self._stopping:
            return
        for name in [n for n in self.services if n not in new]:
            logger.info("service %s removed from the configuration; stopping it", name)
            service = self.services.pop(name)
            service.request("remove")
            self._retired = [r for r in self._retired if r.task is not None and not r.task.done()]
            self._retired.append(service)
        for name, spec in new.items():
            existing = self.services.get(name)
            if existing is None:
                logger.info("service %s added to the configuration", name)
                self.services[name] = added = self._make(name, spec)
                added.start_task()
            elif existing.spec != spec:
                logger.info("service %s: configuration changed; applying it", name)
                existing.request("respec", spec=spec)
        self._notify_all()

    def _notify_all(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self._on_change is not None:
            self._on_change()

    # --- readiness ---------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """Whether every required service is healthy, and a line saying so."""
        if not self.services:
            return True, "no services configured"
        required = [s for s in self.services.values() if s.spec.required_for_ready]
        bad = [s for s in required if not s.healthy]
        parts = [f"{s.name} {s.state}" for s in sorted(self.services.values(), key=_by_name)]
        if bad:
            first = bad[0]
            return False, f"{first.name} is {first.state}: {first.message}; " + ", ".join(parts)
        return True, ", ".join(parts)

    # --- shutdown ----------------------------------------------------------------------

    def gated(self) -> list[supervising.Service]:
        """Services that the stop gate holds up at shutdown right now."""
        return [
            s
            for s in self.services.values()
            if s.spec.stop.gate and s.state not in ("stopped", "failed")
        ]

    async def wait_gate(self) -> None:
        """At shutdown: if the gate is closed, wait for it (bounded) for gated services."""
        gated = self.gated()
        if self.gate.is_open or not gated:
            return
        limit = max(s.spec.stop.gate_max_wait_seconds for s in gated)
        names = ", ".join(s.name for s in gated)
        logger.info(
            "stop gate closed (%s): %s stay(s) up until it opens, at most %.0f s",
            self.gate.reason,
            names,
            limit,
            extra={"services": [s.name for s in gated]},
        )
        if await self.gate.wait_open(limit):
            logger.info("stop gate opened (%s); stopping services", self.gate.reason)
        else:
            logger.warning(
                "stop gate still closed after %.0f s (%s); stopping services anyway",
                limit,
                self.gate.reason,
            )

    async def shutdown(self, *, deadline: float) -> None:
        """Stop every service, dependents first, by ``deadline`` (loop time)."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        order = specs.start_order({n: s.spec for n, s in self.services.items()})
        levels = [[self.services[n] for n in level] for level in reversed(order)]
        for services in [*levels, self._retired]:
            left = deadline - loop.time()
            for service in services:
                service.request("remove", grace=max(0.0, left - 0.2))
            tasks = [s.task for s in services if s.task is not None and not s.task.done()]
            if not tasks:
                continue
            _, late = await asyncio.wait(tasks, timeout=max(0.05, left))
            for task in late:
                logger.error("%s did not stop by the deadline; killing it", task.get_name())
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)

    def kill_now(self) -> None:
        """SIGKILL every service at once: the agent exits this instant (second signal)."""
        for service in [*self.services.values(), *self._retired]:
            service.kill_now()


def _by_name(service: supervising.Service) -> str:
    return service.name
