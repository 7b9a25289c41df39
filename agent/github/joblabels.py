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
- with the store's notes (:class:`sharing.Notes`), the list is left there for every agent
  on the store, and one agent at a time lists a run while the others wait for its note
  (up to the ask's deadline): a 256-leg matrix on 256 pods costs one listing per wave of
  legs, not 256. A note listed before the ask began that does not show the runner is
  listed again, as above;
- a ``workflow_job`` ``in_progress`` delivery names the runner it runs on
  (:func:`note_delivery`): it is left as a note that the job's start finds with no
  request at all, for :data:`RUNNING_NOTE_SECONDS`; the ``completed`` one removes it;
- the permission to grant is ``actions: read``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from agent.github import client, contents, errors, sharing

CACHE_ENTRIES = 512
CACHE_SECONDS = 600.0
RUNNING_NOTE_SECONDS = 300.0
"""How long an ``in_progress`` delivery's note answers for its runner."""
NOTE_WAIT = 30.0
"""The longest wait for another agent's listing when the ask has no deadline."""
_RUN_ID = re.compile(r"[0-9]{1,20}")

_Seen = tuple[str, str, tuple[str, ...]]
"""(status, started_at, labels) of one job on one runner."""


@dataclass(frozen=True)
class RunningJob:
    """The job GitHub says this runner runs now."""

    labels: tuple[str, ...]


@dataclass(frozen=True)
class Delivered:
    """What a ``workflow_job`` delivery says of the job's runner."""

    action: str
    repository: str
    run_id: str
    run_attempt: int
    job_id: int
    runner_name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class _Listing:
    began: float
    """Wall-clock time the listing was asked for (agents on other pods compare it)."""
    runners: dict[str, list[_Seen]]


def _runner_key(repository: str, run_id: str, attempt: int, runner: str) -> str:
    return f"{repository}/{run_id}/{attempt}/{runner}"


async def note_delivery(notes: sharing.Notes, job: Delivered) -> bool:
    """Leave (``in_progress``) or remove (``completed``) the note of the runner ``job``
    runs on; whether the delivery was one of those."""
    if not job.runner_name or not _RUN_ID.fullmatch(job.run_id):
        return False
    contents.check_repository(job.repository)
    key = _runner_key(job.repository, job.run_id, job.run_attempt, job.runner_name[:200])
    if job.action == "in_progress":
        body = {"job_id": job.job_id, "labels": list(job.labels[:256])}
        await notes.write("running", key, json.dumps(body).encode())
        return True
    if job.action == "completed":
        kept = _running_note(await notes.read("running", key, max_age=RUNNING_NOTE_SECONDS))
        if kept is not None and kept[0] == job.job_id:  # not a later job's on a reused runner
            await notes.forget("running", key)
        return True
    return False


def _running_note(raw: bytes | None) -> tuple[int, tuple[str, ...]] | None:
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
        return None
    job_id = data.get("job_id")
    return (job_id if isinstance(job_id, int) else -1), tuple(
        str(x)[:200] for x in data["labels"][:256]
    )


class JobLabels:
    """The running job by (repository, run, attempt, runner)."""

    def __init__(self, api: client.Client, notes: sharing.Notes | None = None) -> None:
        self.api = api
        self.notes = notes
        self._lists: collections.OrderedDict[
            tuple[str, str, int], tuple[float, dict[str, list[_Seen]]]
        ] = collections.OrderedDict()
        self._shared: sharing.Shared[tuple[str, str, int], _Listing] = sharing.Shared()

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
        if self.notes is not None:
            raw = await self.notes.read(
                "running",
                _runner_key(repository, run_id, attempt, runner_name),
                max_age=RUNNING_NOTE_SECONDS,
            )
            noted = _running_note(raw)
            if noted is not None:
                return RunningJob(labels=noted[1])
        cached = self._lists.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            found = _find(cached[1], runner_name)
            if found is not None:
                return found
        asked = time.time()
        for _ in range(2):
            listing = await self._list(key, deadline, runner_name, asked)
            found = _find(listing.runners, runner_name)
            if found is not None or listing.began >= asked:
                return found
            # A listing shared with an earlier ask, taken before this one began: once more.
        return None

    async def _list(
        self, key: tuple[str, str, int], deadline: float | None, runner_name: str, asked: float
    ) -> _Listing:
        repository, run_id, attempt = key
        path = f"/repos/{repository}/actions/runs/{run_id}/attempts/{attempt}/jobs"

        async def fetch() -> _Listing:
            began = time.time()
            jobs = await self.api.get_all(path, key="jobs", need="actions: read", deadline=deadline)
            return _Listing(began, _compact(jobs))

        async def fetch_shared() -> _Listing:
            if self.notes is None:
                return await fetch()
            shelf = self.notes
            note_key = "/".join((repository, run_id, str(attempt)))
            wait = NOTE_WAIT
            if deadline is not None:  # half the time left: the rest is for listing itself
                wait = max(0.0, deadline - asyncio.get_running_loop().time()) / 2

            async def kept() -> _Listing | None:
                note = _listing_note(await shelf.read("jobs", note_key, max_age=CACHE_SECONDS))
                if note is not None and (
                    note.began >= asked or _find(note.runners, runner_name) is not None
                ):
                    return note
                return None

            # Read first, lock only to list: a matrix's legs mostly find the note there.
            found = await kept()
            if found is not None:
                return found
            async with shelf.exclusive("jobs", note_key, wait=wait):
                found = await kept()
                if found is not None:
                    return found
                listing = await fetch()
                note = {"began": listing.began, "runners": listing.runners}
                await shelf.write("jobs", note_key, json.dumps(note).encode())
                return listing

        listing = await self._shared.run(key, fetch_shared)
        self._lists[key] = (time.monotonic(), listing.runners)
        self._lists.move_to_end(key)
        while len(self._lists) > CACHE_ENTRIES:
            self._lists.popitem(last=False)
        return listing


def _listing_note(raw: bytes | None) -> _Listing | None:
    """A listing another agent left, or ``None`` for anything out of shape."""
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("runners"), dict):
        return None
    began = data.get("began")
    runners: dict[str, list[_Seen]] = {}
    for name, seen in data["runners"].items():
        if not isinstance(seen, list):
            return None
        for item in seen:
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], list)):
                return None
            labels = tuple(str(x)[:200] for x in item[2][:256])
            runners.setdefault(str(name)[:200], []).append((str(item[0]), str(item[1]), labels))
    return _Listing(float(began) if isinstance(began, (int, float)) else 0.0, runners)


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
