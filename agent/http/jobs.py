"""Jobs and their in-use leases: entries a running job uses are never evicted.

Policy: ``POST /v1/ensure`` with a ``job`` leases the plan's entries to it *before* any
lookup (see :mod:`agent.store.inuse`), refreshed every 100 s while the agent runs; the
lease ends with ``DELETE /v1/jobs/{id}`` (the runner's job-completed hook), after the
job's ``max_seconds``, or when this agent stops (then it lapses within 5 minutes plus
the skew, so a crashed agent never pins entries for long).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import Field

from agent.http import errors, models
from agent.store import inuse, janitor, layout


class JobModel(models.ApiRequest):
    """The job that will use the entries: they are leased to it, so no janitor (of this
    agent or another sharing the volume) evicts them while it runs."""

    id: str = Field(
        min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$", description="The job's id."
    )
    max_seconds: int = Field(
        default=6 * 3600,
        ge=1,
        le=86400,
        description="Release the lease after this long even without DELETE /v1/jobs/{id}.",
    )


class JobReleased(models.ApiModel):
    """The outcome of DELETE /v1/jobs/{id}."""

    job: str
    released: int = Field(description="How many leases of the job this agent released.")


_LEASE_TTL = 300.0  # refreshed every 100 s while the job runs; a dead agent's lapses soon


class Jobs:
    """The in-use leases this agent holds: one per job, covering every entry any of its
    ensure requests named, with one refresher and one deadline per job."""

    def __init__(self) -> None:
        self._held: dict[str, inuse.Handle] = {}
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        self._lock = asyncio.Lock()

    async def lease(self, settings: Any, plan: dict[str, Any], job: JobModel) -> None:
        """Lease the plan's entries to ``job`` (a 503 if the volume refuses)."""
        store = layout.Store(settings.cache.root)
        keys = {_key(store, s) for s in plan["features"] if s["prefix"]}
        if not keys:
            return
        async with self._lock:
            old = self._held.get(job.id)
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
                    job=job.id,
                    ttl=_LEASE_TTL,
                )
            except layout.StoreError as exc:
                raise errors.ApiError(503, f"cannot lease the entries to the job: {exc}") from exc
            handle.keep_alive()
            self._held[job.id] = handle
            if old is not None:
                await asyncio.to_thread(old.release)
            if job.id not in self._deadlines:
                loop = asyncio.get_running_loop()
                self._deadlines[job.id] = loop.call_later(
                    job.max_seconds, lambda: asyncio.ensure_future(self.release(job.id))
                )

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


JOBS = web.AppKey("jobs", Jobs)


def _key(store: layout.Store, step: dict[str, Any]) -> str:
    prefix = Path(step["prefix"])
    return store.entry(prefix.parent.parent.name, prefix.parent.name, prefix.name).key


async def delete_job(request: web.Request) -> web.Response:
    """Release the entries leased to a job (it ended)."""
    job = request.match_info["id"]
    released = await request.app[JOBS].release(job)
    if not released:
        raise errors.ApiError(404, f"this agent holds no lease for job {job!r}")
    return web.json_response(text=JobReleased(job=job, released=released).model_dump_json())
