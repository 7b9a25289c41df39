"""One supervised service: its state machine, run by one task.

States and what moves between them (every transition is logged with the reason)::

    stopped --start--> waiting (for depends_on) --> starting (spawned, start_period)
    starting --check passes--> running --check fails--> unhealthy --passes--> running
    starting/unhealthy --failure_threshold failed checks--> stopping --> restarting
    any live state --process exits--> restarting (after the backoff) --> starting
    restarting --start limit reached--> failed (left down until start or a config change)
    any --stop--> stopping --> stopped

Policy:
- exit and hang are different faults: an exit is seen at once (a pidfd) and counted with
  reason ``exit``; a hang is seen by ``failure_threshold`` consecutive failed checks, then
  the service is stopped (stop signal, SIGKILL after the grace) and counted ``unhealthy``;
- while a service starts (until its first passing check) checks run fast, from 20 ms
  growing by 30 % per check up to the interval, so readiness follows the service by a
  fraction of its own start time; failures in ``start_period_seconds`` do not count;
- afterwards checks start every ``interval_seconds`` (start to start), so a hang is
  declared within ``interval x failure_threshold + timeout`` of its beginning;
- commands (start, stop, restart, a new spec) never race the task: they set what is
  wanted and wake it, and the task acts at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from agent.config import services as specs
from agent.kits import aiotasks
from agent.services import backoff, output, probing, processes, stale

logger = logging.getLogger(__name__)

State = Literal[
    "waiting", "starting", "running", "unhealthy", "stopping", "restarting", "stopped", "failed"
]
STATES: tuple[State, ...] = (
    "waiting",
    "starting",
    "running",
    "unhealthy",
    "stopping",
    "restarting",
    "stopped",
    "failed",
)
Command = Literal["start", "stop", "restart", "respec", "remove"]
REASONS = ("exit", "unhealthy", "manual")
_FIRST_CHECK = 0.02
_CHECK_GROWTH = 1.3


@dataclass(frozen=True)
class _Outcome:
    kind: Literal["exit", "unhealthy", "command"]
    message: str
    ran: bool = True


class Service:
    """A service, what it is doing, and the task that runs it."""

    def __init__(
        self,
        name: str,
        spec: specs.ServiceSpec,
        *,
        notify: Callable[[Service], None],
        peer_ready: Callable[[str], bool],
        changed: Callable[[], asyncio.Event],
    ) -> None:
        self.name = name
        self.spec = spec
        self.state: State = "stopped"
        self.state_since = time.time()
        self.message = "not started yet"
        self.pid: int | None = None
        self.started_at: float | None = None
        self.restarts = dict.fromkeys(REASONS, 0)
        self.last_exit: int | None = None
        self.last_exit_at: float | None = None
        self.last_health: probing.Result | None = None
        self.failures = 0
        self.next_start_at: float | None = None
        self.output = output.Output(name, spec.output)
        self.backoff = backoff.Backoff(spec.restart)
        self.limit = backoff.StartLimit(spec.restart)
        self.task: asyncio.Task[None] | None = None
        self._notify = notify
        self._peer_ready = peer_ready
        self._changed = changed
        self._wanted = True
        self._failed = False
        self._command: Command | None = None
        self._wake = asyncio.Event()
        self._grace_cap: float | None = None
        self._child: processes.Child | None = None
        self._healthy_since: float | None = None

    # --- what others read --------------------------------------------------------------

    @property
    def up(self) -> bool:
        """Running and, if it has a check, the last check passed."""
        if self.state not in ("running", "unhealthy") or self.pid is None:
            return False
        if self.spec.health is None:
            return True
        return self.last_health is not None and self.last_health.ok

    @property
    def healthy(self) -> bool:
        """In the ``running`` state (its dependents may start; readiness holds)."""
        return self.state == "running"

    # --- commands ----------------------------------------------------------------------

    def request(
        self, kind: Command, *, spec: specs.ServiceSpec | None = None, grace: float | None = None
    ) -> None:
        """Ask for a change; the service's task carries it out at its next step."""
        if kind == "stop":
            self._wanted = False
        elif kind in ("start", "restart"):
            self._wanted = True
            self._clear_failure()
        elif kind == "respec":
            assert spec is not None
            self.spec = spec
            self.output.reconfigure(spec.output)
            self.backoff.policy = self.limit.policy = spec.restart
            if self._failed:  # a config change retries a failed service
                self._clear_failure()
        elif kind == "remove":
            self._wanted = False
            self._grace_cap = grace
        if self._command != "remove":
            self._command = kind
        self._wake.set()

    def _clear_failure(self) -> None:
        self._failed = False
        self.limit.clear()
        self.backoff.reset()

    def _take(self) -> Command | None:
        command, self._command = self._command, None
        self._wake.clear()
        return command

    # --- state -------------------------------------------------------------------------

    def _set(self, state: State, message: str) -> None:
        old = self.state
        self.message = message
        if state == old:
            self._notify(self)
            return
        self.state = state
        self.state_since = time.time()
        level = logging.WARNING if state in ("unhealthy", "restarting", "failed") else logging.INFO
        logger.log(
            level,
            "service %s: %s -> %s: %s",
            self.name,
            old,
            state,
            message,
            extra={"service": self.name, "state": state, "previous": old, "pid": self.pid},
        )
        self._notify(self)

    # --- the task ----------------------------------------------------------------------

    def start_task(self) -> None:
        """Start the service's task (under the agent's task guard)."""
        self.task = aiotasks.create_guarded_task(
            self.run(), name=f"service {self.name}", forever=False
        )

    async def run(self) -> None:
        """Run the service until it is removed (or the task is cancelled)."""
        try:
            while True:
                if self._take() == "remove":
                    self._set("stopped", "stopped by the agent")
                    return
                if self._failed or not self._wanted:
                    if not self._failed:
                        self._set("stopped", "stopped on request")
                    await self._wake.wait()
                    continue
                if not await self._dependencies_ready():
                    continue
                now = time.monotonic()
                if not self.limit.allows(now):
                    self._failed = True
                    policy = self.spec.restart
                    self._set(
                        "failed",
                        f"started {policy.start_limit_burst} times within "
                        f"{policy.start_limit_window_seconds:g} s; left down until "
                        "`runner-agent services restart` or a config change",
                    )
                    continue
                self.limit.record(now)
                outcome = await self._run_once()
                if outcome.kind == "command":
                    continue
                await self._after_fault(outcome)
        finally:
            if self._child is not None and self._child.running:
                # Cancelled with the child still up (shutdown past its grace): no orphan.
                self._child.kill_and_reap()
                self._child = None

    async def _dependencies_ready(self) -> bool:
        while True:
            missing = [d for d in self.spec.depends_on if not self._peer_ready(d)]
            if not missing:
                return True
            self._set("waiting", f"waiting for {', '.join(missing)} to be healthy")
            changed = self._changed()
            waiters = [
                asyncio.ensure_future(changed.wait()),
                asyncio.ensure_future(self._wake.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if self._wake.is_set():
                return False

    async def _after_fault(self, outcome: _Outcome) -> None:
        policy = self.spec.restart
        code = self.last_exit
        clean = outcome.kind == "exit" and code == 0
        if policy.policy == "never" or (policy.policy == "on-failure" and clean):
            if clean:
                self._wanted = False
                self._set("stopped", f"{outcome.message}; restart policy {policy.policy}")
            else:
                self._failed = True
                self._set("failed", f"{outcome.message}; restart policy {policy.policy}")
            return
        reason = "unhealthy" if outcome.kind == "unhealthy" else "exit"
        self.restarts[reason] += 1
        healthy_for = (
            time.monotonic() - self._healthy_since if self._healthy_since is not None else 0.0
        )
        if healthy_for >= policy.reset_after_seconds:
            self.backoff.reset()
        planned = self.backoff.next()
        self.next_start_at = time.time() + planned.delay_seconds
        self._set(
            "restarting",
            f"{outcome.message}; restarting in {planned.delay_seconds:.2f} s "
            f"(fault {planned.attempt} in a row)",
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=planned.delay_seconds)
        self.next_start_at = None

    async def _run_once(self) -> _Outcome:
        spec = self.spec
        self._set("starting", "cleaning stale files")
        await asyncio.to_thread(stale.clean, self.name, spec.pre_start)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_AGENT_")}
        try:
            child = await processes.spawn(
                spec.command,
                env=env | spec.env,
                cwd=spec.cwd,
                user=spec.user,
                on_line=self.output.line,
                group=spec.stop.kill_group,
            )
        except processes.SpawnError as exc:
            self.last_exit, self.last_exit_at = None, time.time()
            return _Outcome("exit", str(exc), ran=False)
        self._child, self.pid, self.started_at = child, child.pid, time.time()
        self.last_health, self.failures, self._healthy_since = None, 0, None
        self._set("starting", f"pid {child.pid}" + (", checking health" if spec.health else ""))
        unhealthy: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        checks = aiotasks.create_guarded_task(
            self._checks(spec, unhealthy), name=f"service {self.name} health checks", forever=False
        )
        try:
            return await self._watch(child, unhealthy)
        finally:
            checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checks
            if not child.running:
                self._child, self.pid = None, None
            self.output.flush()

    async def _watch(self, child: processes.Child, unhealthy: asyncio.Future[str]) -> _Outcome:
        while True:
            woken = asyncio.ensure_future(self._wake.wait())
            waiters: list[asyncio.Future[object]] = [child.exited, unhealthy, woken]  # type: ignore[list-item]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
            if child.exited.done():
                self._exited(child.exited.result())
                return _Outcome("exit", processes.describe_exit(self.last_exit))
            if unhealthy.done():
                self._set("stopping", f"{unhealthy.result()}; stopping it")
                self._exited(await self._stop_child(child))
                return _Outcome("unhealthy", unhealthy.result())
            command = self._command
            if command == "start":
                self._take()
                continue
            if command in ("restart", "respec"):
                self._take()
                self.restarts["manual"] += 1
            why = {
                "stop": "stop requested",
                "remove": "stopping with the agent" if self._grace_cap is not None else "removed",
                "restart": "restart requested",
                "respec": "its configuration changed",
            }[command or "stop"]
            self._set("stopping", why)
            self._exited(await self._stop_child(child))
            return _Outcome("command", why)

    async def _stop_child(self, child: processes.Child) -> int:
        stop = self.spec.stop
        grace = stop.grace_seconds
        if self._grace_cap is not None:
            grace = max(0.0, min(grace, self._grace_cap))
        return await child.stop(signal.Signals[stop.signal], grace=grace)

    def _exited(self, code: int) -> None:
        self.last_exit, self.last_exit_at = code, time.time()
        self.pid = None
        log = logger.info if self.state == "stopping" else logger.warning
        log(
            "service %s %s",
            self.name,
            processes.describe_exit(code),
            extra={"service": self.name, "exit_code": code},
        )

    # --- health ------------------------------------------------------------------------

    async def _checks(self, spec: specs.ServiceSpec, unhealthy: asyncio.Future[str]) -> None:
        health = spec.health
        loop = asyncio.get_running_loop()
        if health is None:
            self._healthy_since = time.monotonic()
            self._set("running", f"pid {self.pid}; no health check configured")
            return
        began = loop.time()
        fast = _FIRST_CHECK
        passed_once = False
        while True:
            check_started = loop.time()
            result = await probing.check(health)
            if self.state == "stopping":
                # A service being stopped stops answering: that is the stop, not a fault
                # (it read as "unhealthy -> stopped" with a warning that it exited 0).
                return
            self.last_health = result
            in_start = not passed_once and loop.time() - began < health.start_period_seconds
            if result.ok:
                self.failures = 0
                passed_once = True
                if self.state != "running":
                    self._healthy_since = time.monotonic()
                    self._set("running", f"pid {self.pid}; {result.message}")
            elif in_start:
                self.message = f"pid {self.pid}; starting: {result.message}"
            else:
                self.failures += 1
                line = f"{self.failures} failed check(s) in a row: {result.message}"
                if self.failures >= health.failure_threshold:
                    unhealthy.set_result(line)
                    return
                self._set("unhealthy", line)
            if in_start and not passed_once:
                wait = min(fast, health.interval_seconds)
                fast *= _CHECK_GROWTH
            else:
                wait = health.interval_seconds - (loop.time() - check_started)
            await asyncio.sleep(max(0.0, wait))

    # --- shutdown ----------------------------------------------------------------------

    def kill_now(self) -> None:
        """SIGKILL the service's group at once (the agent is exiting this instant)."""
        if self._child is not None:
            self._child.kill_now()
