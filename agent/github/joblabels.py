"""The labels a job asked for, from the REST jobs API, for the runner it runs on.

Policy:
- ``GET /repos/{repo}/actions/runs/{run}/attempts/{attempt}/jobs`` (``per_page`` 100,
  every page), and the job is the one whose ``runner_name`` is this runner's;
- the list is cached per (repository, run, attempt) and shared by concurrent asks: a
  matrix's legs that start together cost one listing. A cached list that does not name
  this runner yet (the leg was assigned after it was read) is read again, at most once
  per ask, so an answer is never older than the ask;
- up to :data:`CACHE_ENTRIES` lists, each kept :data:`CACHE_SECONDS` (a run's jobs get
  their runners within minutes);
- the permission to grant is ``actions: read``.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from agent.github import client, sharing

CACHE_ENTRIES = 512
CACHE_SECONDS = 600.0


class JobLabels:
    """Job labels by (repository, run, attempt, runner)."""

    def __init__(self, api: client.Client) -> None:
        self.api = api
        self._lists: collections.OrderedDict[tuple[str, str, int], tuple[float, list[Any]]] = (
            collections.OrderedDict()
        )
        self._shared: sharing.Shared[tuple[str, str, int], list[Any]] = sharing.Shared()

    async def labels(
        self,
        repository: str,
        run_id: str,
        attempt: int,
        runner_name: str,
        *,
        deadline: float | None = None,
    ) -> list[str] | None:
        """The job's labels, or ``None`` if no job of that run names this runner."""
        key = (repository, run_id, attempt)
        cached = self._lists.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            found = _find(cached[1], runner_name)
            if found is not None:
                return found
        jobs = await self._list(key, deadline)
        return _find(jobs, runner_name)

    async def _list(self, key: tuple[str, str, int], deadline: float | None) -> list[Any]:
        repository, run_id, attempt = key
        jobs = await self._shared.run(
            key,
            lambda: self.api.get_all(
                f"/repos/{repository}/actions/runs/{run_id}/attempts/{attempt}/jobs",
                key="jobs",
                need="actions: read",
                deadline=deadline,
            ),
        )
        self._lists[key] = (time.monotonic(), jobs)
        self._lists.move_to_end(key)
        while len(self._lists) > CACHE_ENTRIES:
            self._lists.popitem(last=False)
        return jobs


def _find(jobs: list[Any], runner_name: str) -> list[str] | None:
    for job in jobs:
        if isinstance(job, dict) and job.get("runner_name") == runner_name:
            labels = job.get("labels")
            if isinstance(labels, list):
                return [str(label)[:200] for label in labels[:256]]
            return []
    return None
