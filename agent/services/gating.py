"""The stop gate: lets a service (dockerd) outlive the runner's current job.

Policy: the gate is open unless someone closed it. While it is closed, agent shutdown
waits before stopping any service whose ``stop.gate`` is set, until the gate opens or
the service's ``stop.gate_max_wait_seconds`` pass, whichever comes first (ARC #3842: a
dind sidecar killed on SIGTERM fails the job the runner is still finishing). The jobs
engine (:mod:`agent.jobs.registry`, through the daemon) closes it while any job is open;
an operator can too, through ``POST /v1/stop-gate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

logger = logging.getLogger(__name__)


class StopGate:
    """Open, or closed by one or more holders (the jobs engine, an operator), each with
    its reason: it opens when the last holder lets go, so the jobs engine ending its last
    job does not open a gate an operator closed."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._holders: dict[str, str] = {}
        self.reason = "open at start"
        self.since = time.time()

    @property
    def holders(self) -> dict[str, str]:
        """Who holds the gate closed, and why."""
        return dict(self._holders)

    @property
    def is_open(self) -> bool:
        """Whether gated services may stop now."""
        return self._open.is_set()

    def close(self, reason: str, *, holder: str = "operator") -> None:
        """Hold gated services up at shutdown until ``holder`` opens it (and no other
        holder holds it)."""
        if self.is_open:
            logger.info("stop gate closed: %s", reason, extra={"reason": reason})
            self.since = time.time()
        self._holders[holder] = reason
        self._open.clear()
        self.reason = "; ".join(self._holders.values())

    def open(self, reason: str, *, holder: str = "operator", force: bool = False) -> None:
        """``holder`` lets go; the gate opens when no one else holds it, or at once with
        ``force`` (an operator's ``POST /v1/stop-gate``: every hold is dropped)."""
        if force:
            self._holders.clear()
        else:
            self._holders.pop(holder, None)
        if self._holders:
            self.reason = "; ".join(self._holders.values())
            return
        if not self.is_open:
            logger.info("stop gate opened: %s", reason, extra={"reason": reason})
            self.since = time.time()
        self._open.set()
        self.reason = reason

    async def wait_open(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until the gate is open, at most ``timeout`` seconds; whether it opened."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._open.wait(), timeout=timeout)
        return self.is_open
