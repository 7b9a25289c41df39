"""The job a runner runs now, and the labels it asked for, from the REST jobs API.

Policy:
- ``GET /repos/{repo}/actions/runs/{run}/attempts/{attempt}/jobs`` (``per_page`` 100,
  every page); the job is the one whose ``runner_name`` is this runner's and whose status
  is ``in_progress``, the latest started if several, and never one this runner already
  finished (:meth:`JobLabels.finished`: a reused runner's earlier job of the same run may
  still read in progress, in a listing or a note). Finding it also confirms that the job
  runs on this runner, in this repository (policy trusts a repository only then);
- the repository and the run id go into the URL: owner/name and digits only;
- the list is kept per (repository, run, attempt) as {runner: [(status, started, labels,
  job id)]} (small), shared by concurrent asks: a matrix's legs that start together cost
  one listing. A kept list that does not show this runner in progress is read again, at
  most once per ask and by this ask alone, so an answer is never older than the ask;
- up to :data:`CACHE_ENTRIES` lists, each kept :data:`CACHE_SECONDS`;
- with the store's notes (:class:`sharing.Notes`), the list is left there for every agent
  on the store, and one agent at a time lists a run while the others wait for its note
  (up to the ask's deadline): a 256-leg matrix on 256 pods costs one listing per wave of
  legs, not 256. Another pod's note that does not show the runner counts as newer than
  the ask only when it began :data:`CLOCK_SLACK` after it (pods' clocks differ; erring
  costs one listing). Note keys name the API (one store may serve GHES and github.com);
- a ``workflow_job`` ``in_progress`` delivery names the runner it runs on
  (:func:`note_delivery`): it is left as a note that the job's start finds with no
  request at all, for :data:`RUNNING_NOTE_SECONDS`; the ``completed`` one marks the job
  finished, so a late or repeated ``in_progress`` cannot bring it back;
- the permission to grant is ``actions: read``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
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
CLOCK_SLACK = 5.0
"""Seconds another pod's clock may be ahead of this one's."""
MAX_LABELS = 256
"""Labels kept per job, from a listing or a delivery alike."""
FINISHED_KEPT = 32
"""Job ids a runner's finished note remembers (a run's jobs on one reused runner)."""
FINISHED_SECONDS = 6 * 3600.0
"""How long a finished note is believed: longer than any listing or note it corrects."""
_RUN_ID = re.compile(r"[0-9]{1,20}")

_Seen = tuple[str, str, tuple[str, ...], int]
"""(status, started_at, labels, job id) of one job on one runner."""


@dataclass(frozen=True)
class RunningJob:
    """The job GitHub says this runner runs now."""

    labels: tuple[str, ...]
    job_id: int = 0
    """GitHub's id of the job (0: not known)."""


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
    own: bool = True
    """Listed by this agent (its clock), not read from another's note."""

    def newer_than(self, asked: float) -> bool:
        return self.began >= (asked if self.own else asked + CLOCK_SLACK)


def _runner_key(scope: str, repository: str, run_id: str, attempt: int, runner: str) -> str:
    return f"{scope} {repository}/{run_id}/{attempt}/{runner[:200]}"


def _id_list(raw: bytes | None) -> list[int]:
    """A finished note's job ids, latest first."""
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return []
    if not isinstance(data, list):
        return []
    return [x for x in data[:FINISHED_KEPT] if isinstance(x, int) and not isinstance(x, bool)]


async def _finished_ids(notes: sharing.Notes, key: str) -> set[int]:
    return set(_id_list(await notes.read("finished", key, max_age=FINISHED_SECONDS)))


async def _note_finished(notes: sharing.Notes, key: str, job_id: int) -> None:
    kept = _id_list(await notes.read("finished", key, max_age=FINISHED_SECONDS))
    if job_id not in kept:
        kept = [job_id, *kept][:FINISHED_KEPT]
        await notes.write("finished", key, json.dumps(kept).encode())
    noted = _running_note(await notes.read("running", key, max_age=RUNNING_NOTE_SECONDS))
    if noted is not None and noted[0] == job_id:
        await notes.forget("running", key)


async def note_delivery(notes: sharing.Notes, job: Delivered, *, scope: str) -> bool:
    """Leave (``in_progress``) the note of the runner ``job`` runs on, or mark the job
    finished (``completed``); whether the delivery was one of those. ``scope`` is the
    API the deliveries come from (``github.api_url``)."""
    if not job.runner_name or not _RUN_ID.fullmatch(job.run_id) or job.job_id <= 0:
        return False
    contents.check_repository(job.repository)
    key = _runner_key(scope, job.repository, job.run_id, job.run_attempt, job.runner_name)
    if job.action == "in_progress":
        if job.job_id in await _finished_ids(notes, key):
            return True  # a late delivery of a job already finished: it runs no more
        body = {"job_id": job.job_id, "labels": list(job.labels[:MAX_LABELS])}
        await notes.write("running", key, json.dumps(body, ensure_ascii=False).encode())
        return True
    if job.action == "completed":
        await _note_finished(notes, key, job.job_id)
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
    if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id <= 0:
        return None
    return job_id, tuple(str(x)[:200] for x in data["labels"][:MAX_LABELS])


class JobLabels:
    """The running job by (repository, run, attempt, runner)."""

    def __init__(self, api: client.Client, notes: sharing.Notes | None = None) -> None:
        self.api = api
        self.notes = notes
        self._lists: collections.OrderedDict[
            tuple[str, str, int], tuple[float, dict[str, list[_Seen]]]
        ] = collections.OrderedDict()
        self._shared: sharing.Shared[tuple[str, str, int], _Listing] = sharing.Shared()
        self._finished: collections.OrderedDict[str, set[int]] = collections.OrderedDict()

    def _key(self, repository: str, run_id: str, attempt: int, runner: str) -> str:
        return _runner_key(self.api.api_url, repository, run_id, attempt, runner)

    async def finished(
        self, repository: str, run_id: str, attempt: int, runner_name: str, job_id: int
    ) -> None:
        """The runner finished GitHub's job ``job_id``: no later ask of this runner is
        answered with it, from a listing or a note (a reused runner runs the run's next
        job next)."""
        if job_id <= 0:
            return
        key = self._key(repository, run_id, attempt, runner_name)
        self._finished.setdefault(key, set()).add(job_id)
        self._finished.move_to_end(key)
        while len(self._finished) > CACHE_ENTRIES * 8:
            self._finished.popitem(last=False)
        if self.notes is not None:
            await _note_finished(self.notes, key, job_id)

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
        runner_key = self._key(repository, run_id, attempt, runner_name)
        done = set(self._finished.get(runner_key, ()))
        if self.notes is not None:
            done |= await _finished_ids(self.notes, runner_key)
            noted = _running_note(
                await self.notes.read("running", runner_key, max_age=RUNNING_NOTE_SECONDS)
            )
            if noted is not None and noted[0] not in done:
                return RunningJob(labels=noted[1], job_id=noted[0])
        cached = self._lists.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            found = _find(cached[1], runner_name, done)
            if found is not None:
                return found
        asked = time.time()
        listing = await self._list(key, deadline, runner_name, asked, done, share=True)
        found = _find(listing.runners, runner_name, done)
        if found is not None or listing.newer_than(asked):
            return found
        # A listing shared with an earlier ask, or another pod's, that may predate this
        # one: once more, by this ask alone (joining another's could take the same).
        listing = await self._list(key, deadline, runner_name, asked, done, share=False)
        return _find(listing.runners, runner_name, done)

    async def _list(
        self,
        key: tuple[str, str, int],
        deadline: float | None,
        runner_name: str,
        asked: float,
        done: set[int],
        *,
        share: bool,
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
            note_key = f"{self.api.api_url} {repository}/{run_id}/{attempt}"
            wait = NOTE_WAIT
            if deadline is not None:  # half the time left: the rest is for listing itself
                wait = max(0.0, deadline - asyncio.get_running_loop().time()) / 2

            async def kept() -> _Listing | None:
                note = _listing_note(await shelf.read("jobs", note_key, max_age=CACHE_SECONDS))
                if note is not None and (
                    note.newer_than(asked) or _find(note.runners, runner_name, done) is not None
                ):
                    return note
                return None

            async def ready() -> bool:
                return await kept() is not None

            # Read first, lock only to list: a matrix's legs mostly find the note there.
            found = await kept()
            if found is not None:
                return found
            async with shelf.exclusive("jobs", note_key, wait=wait, ready=ready):
                found = await kept()
                if found is not None:
                    return found
                listing = await fetch()
                note = {"began": listing.began, "runners": listing.runners}
                await shelf.write("jobs", note_key, json.dumps(note, ensure_ascii=False).encode())
                return listing

        listing = await (self._shared.run(key, fetch_shared) if share else fetch_shared())
        self._lists[key] = (time.monotonic(), listing.runners)
        self._lists.move_to_end(key)
        while len(self._lists) > CACHE_ENTRIES:
            self._lists.popitem(last=False)
        return listing


def _listing_note(raw: bytes | None) -> _Listing | None:
    """A listing another agent left, or ``None`` for anything out of shape (or dated
    ahead of this host's clock past the slack)."""
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("runners"), dict):
        return None
    began = data.get("began")
    if not isinstance(began, (int, float)) or isinstance(began, bool):
        return None
    if not math.isfinite(began) or began > time.time() + CLOCK_SLACK:
        return None
    runners: dict[str, list[_Seen]] = {}
    for name, seen in data["runners"].items():
        if not isinstance(seen, list):
            return None
        for item in seen:
            if not (
                isinstance(item, list)
                and len(item) == 4
                and isinstance(item[2], list)
                and isinstance(item[3], int)
            ):
                return None
            labels = tuple(str(x)[:200] for x in item[2][:MAX_LABELS])
            runners.setdefault(str(name)[:200], []).append(
                (str(item[0]), str(item[1]), labels, item[3])
            )
    return _Listing(float(began), runners, own=False)


def _compact(jobs: list[Any]) -> dict[str, list[_Seen]]:
    runners: dict[str, list[_Seen]] = {}
    for job in jobs:
        if not isinstance(job, dict) or not isinstance(job.get("runner_name"), str):
            continue
        labels = job.get("labels")
        kept = tuple(str(x)[:200] for x in labels[:MAX_LABELS]) if isinstance(labels, list) else ()
        job_id = job.get("id")
        number = job_id if isinstance(job_id, int) and not isinstance(job_id, bool) else 0
        seen = (str(job.get("status", "")), str(job.get("started_at") or ""), kept, number)
        runners.setdefault(job["runner_name"][:200], []).append(seen)
    return runners


def _find(runners: dict[str, list[_Seen]], runner_name: str, done: set[int]) -> RunningJob | None:
    running = [
        s for s in runners.get(runner_name[:200], []) if s[0] == "in_progress" and s[3] not in done
    ]
    if not running:
        return None
    latest = max(running, key=lambda s: s[1])
    return RunningJob(labels=latest[2], job_id=latest[3])
