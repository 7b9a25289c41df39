"""Jobs and their in-use leases: entries a running job uses are never evicted.

Policy: an ensure for a job leases the plan's entries to it *before* any lookup (see
:mod:`agent.store.inuse`): one lease per job, covering every entry any of its requests
named, refreshed every 100 s while the agent runs. The lease ends when the job ends
(the runner's job-completed hook), after the job's ``max_seconds``, or when this agent
stops (then it lapses within 5 minutes plus the skew, so a crashed agent never pins
entries for long). The daemon owns the engine and closes it first at shutdown.
"""

from __future__ import annotations

import asyncio

from agent.kits import aiotasks
from agent.platform import plans as wire
from agent.store import entries, inuse, janitor, layout


class LeaseRefused(layout.StoreError):
    """The volume refused the lease (read-only, full, or gone); the job's entries are
    not protected from eviction."""


_LEASE_TTL = 300.0  # refreshed every 100 s while the job runs; a dead agent's lapses soon


class Leases:
    """The in-use leases this agent holds: one per job, covering every entry any of its
    ensure requests named, with one refresher and one deadline per job."""

    def __init__(self) -> None:
        self._held: dict[str, inuse.Handle] = {}
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        self._lock = asyncio.Lock()
        self._expiring: set[asyncio.Task[None]] = set()

    async def lease(
        self, store: layout.Store, plan: wire.Plan, *, job: str, max_seconds: float
    ) -> None:
        """Lease the plan's entries to ``job`` until it ends, or for ``max_seconds`` at
        most (counted from its first lease); :class:`LeaseRefused` if the volume refuses."""
        keys = {entries.entry_of(store, s["prefix"]).key for s in plan["features"] if s["prefix"]}
        if not keys:
            return
        async with self._lock:
            old = self._held.get(job)
            if old is not None:
                if keys <= set(old.lease.keys):
                    return
                keys |= set(old.lease.keys)
            try:
                # The new lease first, then the old one goes: the entries are never
                # without one in between.
                handle = await asyncio.to_thread(
                    inuse.hold,
                    store,
                    sorted(keys),
                    agent_id=janitor.default_agent_id(),
                    job=job,
                    ttl=_LEASE_TTL,
                )
            except layout.StoreError as exc:
                raise LeaseRefused(f"cannot lease the entries to the job: {exc}") from exc
            handle.keep_alive()
            self._held[job] = handle
            if old is not None:
                await asyncio.to_thread(old.release)
            if job not in self._deadlines:
                loop = asyncio.get_running_loop()
                self._deadlines[job] = loop.call_later(max_seconds, self._expire, job)

    def _expire(self, job: str) -> None:
        # A guarded task: a release that fails is logged, never lost in a callback.
        self._deadlines.pop(job, None)
        task = aiotasks.create_guarded_task(
            self.release(job), name=f"lease deadline of {job}", forever=False
        )
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def release(self, job: str) -> int:
        """Release the lease of ``job``; how many leases that was (0 or 1)."""
        async with self._lock:
            handle = self._held.pop(job, None)
            deadline = self._deadlines.pop(job, None)
        if deadline is not None:
            deadline.cancel()
        if handle is None:
            return 0
        await asyncio.to_thread(handle.release)
        return 1

    async def close(self) -> None:
        """Release everything (agent shutdown): the jobs' own agents re-lease on demand."""
        for job in list(self._held):
            await self.release(job)
        if self._expiring:
            await asyncio.gather(*self._expiring, return_exceptions=True)
