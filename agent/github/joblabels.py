"""The job a runner runs now, and the labels it asked for, from the REST jobs API.

Policy:
- ``GET /repos/{repo}/actions/runs/{run}/attempts/{attempt}/jobs`` (``per_page`` 100,
  every page); the job is the one whose ``runner_name`` is this runner's and whose status
  is ``in_progress`` (a reused runner may have run an earlier job of the same run), the
  latest started if several; finding it also confirms that the job runs on this runner,
  in this repository (policy trusts a repository only then);
- the repository and the run id go into the URL: owner/name and digits only;
- the list is kept per (repository, run, attempt) as {runner: [(status, started, labels)]}
  (small), shared by concurrent asks: a matrix's legs that start together cost one
  listing. A kept list that does not show this runner in progress is read again, at
  most once per ask, so an answer is never older than the ask;
- up to :data:`CACHE_ENTRIES` lists, each kept :data:`CACHE_SECONDS`;
- the permission to grant is ``actions: read``.
"""

from __future__ import annotations

import collections
import re
import time
from dataclasses import dataclass
from typing import Any

from agent.github import client, contents, errors, sharing

CACHE_ENTRIES = 512
CACHE_SECONDS = 600.0
_RUN_ID = re.compile(r"[0-9]{1,20}")

_Seen = tuple[str, str, tuple[str, ...]]
"""(status, started_at, labels) of one job on one runner."""


@dataclass(frozen=True)
class RunningJob:
    """The job GitHub says this runner runs now."""

    labels: tuple[str, ...]


class JobLabels:
    """The running job by (repository, run, attempt, runner)."""

    def __init__(self, api: client.Client) -> None:
        self.api = api
        self._lists: collections.OrderedDict[
            tuple[str, str, int], tuple[float, dict[str, list[_Seen]]]
        ] = collections.OrderedDict()
        self._shared: sharing.Shared[tuple[str, str, int], dict[str, list[_Seen]]] = (
            sharing.Shared()
        )

    async def running(
        self,
        repository: str,
        run_id: str,
        attempt: int,
        runner_name: str,
        *,
        deadline: float | None = None,
    ) -> RunningJob | None:
        """This runner's job of that run, in progress; ``None`` if GitHub lists none."""
        contents.check_repository(repository)
        if not _RUN_ID.fullmatch(run_id) or not 1 <= attempt <= 10_000:
            raise errors.GitHubError(f"run {run_id!r} attempt {attempt} is not a run's")
        key = (repository, run_id, attempt)
        cached = self._lists.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            found = _find(cached[1], runner_name)
            if found is not None:
                return found
        return _find(await self._list(key, deadline), runner_name)

    async def _list(
        self, key: tuple[str, str, int], deadline: float | None
    ) -> dict[str, list[_Seen]]:
        repository, run_id, attempt = key

        async def fetch() -> dict[str, list[_Seen]]:
            jobs = await self.api.get_all(
                f"/repos/{repository}/actions/runs/{run_id}/attempts/{attempt}/jobs",
                key="jobs",
                need="actions: read",
                deadline=deadline,
            )
            return _compact(jobs)

        runners = await self._shared.run(key, fetch)
        self._lists[key] = (time.monotonic(), runners)
        self._lists.move_to_end(key)
        while len(self._lists) > CACHE_ENTRIES:
            self._lists.popitem(last=False)
        return runners


def _compact(jobs: list[Any]) -> dict[str, list[_Seen]]:
    runners: dict[str, list[_Seen]] = {}
    for job in jobs:
        if not isinstance(job, dict) or not isinstance(job.get("runner_name"), str):
            continue
        labels = job.get("labels")
        kept = tuple(str(x)[:200] for x in labels[:256]) if isinstance(labels, list) else ()
        seen = (str(job.get("status", "")), str(job.get("started_at") or ""), kept)
        runners.setdefault(job["runner_name"][:200], []).append(seen)
    return runners


def _find(runners: dict[str, list[_Seen]], runner_name: str) -> RunningJob | None:
    running = [s for s in runners.get(runner_name, []) if s[0] == "in_progress"]
    if not running:
        return None
    latest = max(running, key=lambda s: s[1])
    return RunningJob(labels=latest[2])
