"""The jobs this agent serves: each job's life, its secret, and what it holds.

Policy:
- a job is opened by its runner's job-started hook and named by (runner, run id, run
  attempt, job). Matrix legs share all but the runner, and a host agent may serve
  several runners, so the runner is part of the name. Its life: setting up (features
  being ensured), running, completed;
- opening is idempotent: the hook makes a random *claim* once per job start, and a
  re-post with the same name and claim (the agent died or the stream broke) resumes the
  same job with the same secret. A runner runs one job at a time, so while one is open
  another start for that runner is refused, unless it supersedes the open one by
  presenting that job's secret (the hook keeps it; its completed hook never ran);
- the per-job *secret* (answered once, to the claim's holder) is what completing the
  job, releasing its leases and ensuring on its behalf require: every job on the agent
  shares the job token, and one job must not release another's entries;
- a job ends when its completed hook says so, when a later job of its runner supersedes
  it, or after ``runner.job_max_seconds``; then its leases go and, when no job is left,
  the stop gate opens (it is closed while any job is open, so dockerd outlives the job
  when the agent is told to stop);
- completed jobs are remembered (``runner.history`` of them), so a repeated completion
  is answered as done rather than as unknown;
- *watchers* (the pod annotator) are told of each job that opens and ends, under the
  lock: each call must return at once, and one that raises is logged, never passed on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from agent.gpu import meter as gpu_meter
from agent.jobs import leases
from agent.jobs import metrics as job_metrics
from agent.kits import aiotasks
from agent.platform import plans as wire
from agent.store import layout

logger = logging.getLogger(__name__)

State = Literal["setting-up", "running", "completed"]
Result = Literal["succeeded", "failed", "cancelled", "unknown", "abandoned", "expired"]
GpuKind = Literal["all", "none", "void", "list", "unset"]


class JobError(Exception):
    """A job request the agent refuses; the subclasses are the cases callers tell apart."""


class UnknownJob(JobError):
    """No job of that id is open or remembered (the agent may have restarted since)."""


class WrongSecret(JobError):
    """The secret presented is not the job's."""


class RunnerBusy(JobError):
    """The runner already has another job open."""

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message)
        self.job = job


class JobEnded(JobError):
    """The job is completed: nothing more can be done on its behalf."""


class TooManyJobs(JobError):
    """As many jobs are open as the agent serves (``runner.max_open_jobs``)."""


class UnknownRunner(JobError):
    """The runner is not one this agent serves (``runner.names``)."""


class Stopping(JobError):
    """The agent is shutting down: it opens no new job (open ones complete as usual)."""


MAX_REQUESTS = 256
"""Requests a job's record keeps (``GET /v1/jobs/current``); more are installed, not listed."""


@dataclass(frozen=True)
class Gpus:
    """The GPUs the runner's container sees (its NVIDIA_VISIBLE_DEVICES)."""

    kind: GpuKind
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobSpec:
    """What the job-started hook says about its job."""

    runner_name: str
    run_id: str
    run_attempt: int
    job: str
    repository: str | None = None
    workflow: str | None = None
    workflow_ref: str | None = None
    sha: str | None = None
    event_name: str | None = None
    gpus: Gpus | None = None
    trusted: bool = True
    """Whether policy trusts ``repository``: with GitHub credentials, only when GitHub
    showed this runner running a job of it."""
    github_job_id: int = 0
    """GitHub's id of the job GitHub showed running (0: not asked or not known)."""

    @property
    def key(self) -> tuple[str, str, int, str]:
        """What names the job: matrix legs differ by runner only."""
        return (self.runner_name, self.run_id, self.run_attempt, self.job)

    def describe(self) -> str:
        """The job for a log line or an error: repository, run, job and runner."""
        where = self.repository or "a repository"
        return (
            f"{where} run {self.run_id} attempt {self.run_attempt} job {self.job!r} "
            f"on runner {self.runner_name!r}"
        )


@dataclass(eq=False)
class Job:
    """One job this agent serves."""

    id: str
    spec: JobSpec
    secret: str = field(repr=False)
    claim_digest: bytes = field(repr=False)
    created: float
    """Wall time it was opened (seconds since the epoch)."""
    requests: list[str] = field(default_factory=list)
    state: State = "setting-up"
    result: Result | None = None
    completed: float | None = None
    setup_seconds: float | None = None

    def has_secret(self, secret: str) -> bool:
        """Whether ``secret`` is this job's (in constant time)."""
        return hmac.compare_digest(self.secret.encode(), secret.encode())

    @property
    def open(self) -> bool:
        """Whether the job has not ended."""
        return self.state != "completed"


@dataclass(frozen=True)
class Started:
    """What :meth:`Jobs.start` did: the job, and whether it resumed an open one."""

    job: Job
    resumed: bool
    superseded: Job | None = None


@dataclass(frozen=True)
class Completed:
    """What :meth:`Jobs.complete` did."""

    job: Job
    released: int
    already: bool


Gate = Callable[[str | None], None]
"""Closes the stop gate with a reason, or opens it with ``None``."""


class GpuMeter(Protocol):
    """What a job used of its GPUs (the GPU engine's :class:`agent.gpu.meter.Meter`)."""

    async def begin(self, job_id: str, kind: str | None, devices: list[str]) -> None: ...

    async def end(self, job_id: str) -> gpu_meter.GpuUse | None: ...

    def discard(self, job_id: str) -> None: ...


class JobWatcher(Protocol):
    """Told of each job that opens and ends (not of a resumed one); both calls are made
    under the engine's lock, so they must not block (note the change, work elsewhere)."""

    def opened(self, job: Job) -> None: ...

    def ended(self, job: Job) -> None: ...


def _digest(claim: str) -> bytes:
    return hashlib.sha256(claim.encode()).digest()


class Jobs:
    """The jobs engine: open jobs by id and by runner, their leases, deadlines, metrics
    and the stop gate."""

    def __init__(
        self,
        *,
        leases_: leases.Leases | None = None,
        metrics: job_metrics.JobMetrics | None = None,
        gate: Gate | None = None,
        max_seconds: Callable[[], float] = lambda: 6 * 3600.0,
        history: Callable[[], int] = lambda: 100,
        max_open: Callable[[], int] = lambda: 64,
        runners: Callable[[], list[str]] = list,
        gpu_meter: Callable[[], GpuMeter | None] = lambda: None,
        watchers: Sequence[JobWatcher] = (),
    ) -> None:
        self.leases = leases_ if leases_ is not None else leases.Leases()
        self._watchers = tuple(watchers)
        self._gpu_meter = gpu_meter
        self._metrics = metrics or job_metrics.JobMetrics(None)
        self._gate = gate
        self._max_seconds = max_seconds
        self._history = history
        self._max_open = max_open
        self._runners = runners
        self._stopping = False
        self._info_refs: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        self._open: dict[str, Job] = {}
        self._by_runner: dict[str, Job] = {}
        self._done: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        self._expiring: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._idle = asyncio.Event()
        self._idle.set()

    # --- opening -------------------------------------------------------------------------

    async def start(
        self,
        spec: JobSpec,
        *,
        claim: str,
        requests: list[str] | None = None,
        supersede: tuple[str, str] | None = None,
    ) -> Started:
        """Open the job ``spec`` names, or resume it when ``claim`` matches the open one;
        :class:`RunnerBusy` when its runner has another job open that ``supersede`` (an
        id and that job's secret) does not end."""
        digest = _digest(claim)
        superseded: Job | None = None
        self.admits(spec.runner_name)
        async with self._lock:
            current = self._by_runner.get(spec.runner_name)
            if (
                current is not None
                and current.spec.key == spec.key
                and hmac.compare_digest(current.claim_digest, digest)
            ):
                current.requests = _merged(current.requests, requests or [])
                return Started(current, resumed=True)
            if self._stopping:
                raise Stopping(
                    "the agent is shutting down and opens no new job; the runner's next "
                    "job starts once an agent serves again"
                )
            if current is not None:
                if supersede is None or supersede[0] != current.id:
                    raise RunnerBusy(self._busy_message(current, spec), current)
                if not current.has_secret(supersede[1]):
                    raise WrongSecret(
                        f"the secret given to supersede job {current.id} is not that job's"
                    )
            # The superseded job stays counted: it is replaced, not added to.
            if len(self._open) - (current is not None) >= self._max_open():
                raise TooManyJobs(
                    f"this agent already has {len(self._open)} jobs open, the most it serves "
                    "(runner.max_open_jobs); jobs end when their job-completed hook runs or "
                    "after runner.job_max_seconds"
                )
            if current is not None:  # every refusal is behind us: now it ends
                superseded = current
                self._end(current, "abandoned")
            job = Job(
                id=f"j-{secrets.token_hex(8)}",
                spec=spec,
                secret=secrets.token_urlsafe(32),
                claim_digest=digest,
                created=time.time(),
                requests=_merged([], requests or []),
            )
            self._open[job.id] = job
            self._by_runner[spec.runner_name] = job
            self._deadlines[job.id] = asyncio.get_running_loop().call_later(
                self._max_seconds(), self._expire, job.id
            )
            labels = self._info_labels(job)
            self._info_refs[labels] += 1  # matrix legs share every label but the runner
            self._metrics.info.labels(*labels).set(1)
            self._sync_gate()
            self._tell("opened", job)
        if superseded is not None:
            logger.warning(
                "job %s (%s) was still open when the next job of its runner started: its "
                "job-completed hook did not run; completed it as abandoned",
                superseded.id,
                superseded.spec.describe(),
                extra={"job": superseded.id},
            )
            await self.leases.release(superseded.id)
        logger.info(
            "job %s started: %s",
            job.id,
            spec.describe(),
            extra={"job": job.id, "runner": spec.runner_name},
        )
        meter = self._gpu_meter()
        if meter is not None:
            gpus = spec.gpus
            try:
                await meter.begin(
                    job.id, gpus.kind if gpus else None, list(gpus.devices) if gpus else []
                )
            except Exception:  # a meter never fails a job
                logger.exception("the GPU meter of job %s failed to start", job.id)
        return Started(job, resumed=False, superseded=superseded)

    def _busy_message(self, current: Job, spec: JobSpec) -> str:
        opened = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(current.created))
        return (
            f"runner {spec.runner_name!r} already has job {current.id} open "
            f"({current.spec.describe()}, since {opened}): a runner runs one job at a time. "
            "If that job is over, its job-completed hook did not run: the next job-started "
            "hook that holds its secret supersedes it, an admin can complete it "
            f"(POST /v1/jobs/{current.id}/complete with the admin token), or it ends by "
            f"itself after runner.job_max_seconds ({self._max_seconds():.0f} s)"
        )

    # --- on behalf of a job ----------------------------------------------------------------

    def find(self, job_id: str, secret: str | None) -> Job:
        """The job ``job_id`` (open or remembered), if ``secret`` is its secret; ``None``
        skips the check (an admin's call). :class:`UnknownJob`, :class:`WrongSecret`."""
        job = self._open.get(job_id) or self._done.get(job_id)
        if job is None:
            raise UnknownJob(
                f"this agent has no job {job_id!r}: it may have restarted since the job "
                "started (then it holds nothing for it), or the id is wrong"
            )
        if secret is not None and not job.has_secret(secret):
            raise WrongSecret(f"the secret presented for job {job_id} is not that job's")
        return job

    def running(self, job_id: str, secret: str) -> Job:
        """An open job, for a request on its behalf; :class:`JobEnded` if it completed."""
        job = self.find(job_id, secret)
        if not job.open:
            raise JobEnded(f"job {job_id} has completed ({job.result}); start a new job")
        return job

    async def lease(self, job: Job, store: layout.Store, plan: wire.Plan) -> None:
        """Lease ``plan``'s entries to ``job`` until it ends (see :mod:`~agent.jobs.leases`)."""
        remaining = self._max_seconds() - (time.time() - job.created)
        await self.leases.lease(store, plan, job=job.id, max_seconds=max(1.0, remaining))

    def add_requests(self, job: Job, requests: list[str]) -> None:
        """Record what an explicit ensure asked for, for ``GET /v1/jobs/current``."""
        job.requests = _merged(job.requests, requests)

    def setup_done(self, job: Job, *, seconds: float) -> None:
        """The job-started hook's features are settled: the job runs (once counted)."""
        if job.state == "setting-up":
            job.state = "running"
            job.setup_seconds = seconds
            self._metrics.setup_seconds.observe(seconds)

    # --- ending ---------------------------------------------------------------------------

    async def complete(
        self,
        job_id: str,
        secret: str | None,
        result: Result = "unknown",
        *,
        seconds: float | None = None,
    ) -> Completed:
        """End ``job_id`` with ``result`` (and the job's own ``seconds``, as its hook
        measured them, for the log) and release its leases; a job already ended is
        answered as such (``already``)."""
        async with self._lock:
            job = self.find(job_id, secret)
            if not job.open:
                return Completed(job, released=0, already=True)
            self._end(job, result)
        released = await self.leases.release(job.id)
        took = f" after {seconds:.0f} s" if seconds is not None else ""
        extra: dict[str, object] = {"job": job.id, "result": result, "seconds": seconds}
        used = ""
        use = await self._gpu_use(job.id)
        if use is not None:
            extra["gpus"] = use.gpus
            used = f", {use.gpus} GPU(s)"
            if use.busy_seconds is not None:
                extra["gpu_busy_seconds"] = use.busy_seconds
                self._metrics.gpu_busy.observe(use.busy_seconds)
                used += f" busy {use.busy_seconds:.1f} s"
            if use.energy_joules is not None:
                extra["gpu_energy_joules"] = round(use.energy_joules, 1)
                self._metrics.gpu_energy.observe(use.energy_joules)
                used += f", {use.energy_joules:.0f} J"
        logger.info(
            "job %s completed (%s)%s%s: %s",
            job.id,
            result,
            took,
            used,
            job.spec.describe(),
            extra=extra,
        )
        return Completed(job, released=released, already=False)

    async def _gpu_use(self, job_id: str) -> gpu_meter.GpuUse | None:
        meter = self._gpu_meter()
        if meter is None:
            return None
        try:
            return await meter.end(job_id)
        except Exception:  # a meter never fails a job's completion
            logger.exception("the GPU meter of job %s failed", job_id)
            return None

    def _end(self, job: Job, result: Result) -> None:
        # Under the lock; the caller releases the leases after.
        job.state, job.result, job.completed = "completed", result, time.time()
        self._open.pop(job.id, None)
        if self._by_runner.get(job.spec.runner_name) is job:
            del self._by_runner[job.spec.runner_name]
        deadline = self._deadlines.pop(job.id, None)
        if deadline is not None:
            deadline.cancel()
        self._done[job.id] = job
        meter = self._gpu_meter()
        if meter is not None and result in ("abandoned", "expired"):
            meter.discard(job.id)  # no completion will read it
        while len(self._done) > self._history():
            self._done.popitem(last=False)
        self._metrics.jobs.labels(result).inc()
        labels = self._info_labels(job)
        self._info_refs[labels] -= 1
        if self._info_refs[labels] <= 0:
            del self._info_refs[labels]
            with contextlib.suppress(KeyError):
                self._metrics.info.remove(*labels)
        self._sync_gate()
        self._tell("ended", job)

    def _tell(self, event: Literal["opened", "ended"], job: Job) -> None:
        for watcher in self._watchers:
            try:
                (watcher.opened if event == "opened" else watcher.ended)(job)
            except Exception:  # a watcher never fails a job
                logger.exception("a job watcher failed on job %s %s", job.id, event)

    def _expire(self, job_id: str) -> None:
        # A guarded task: a release that fails is logged, never lost in a callback.
        self._deadlines.pop(job_id, None)
        task = aiotasks.create_guarded_task(
            self._expire_now(job_id), name=f"deadline of job {job_id}", forever=False
        )
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def _expire_now(self, job_id: str) -> None:
        async with self._lock:
            job = self._open.get(job_id)
            if job is None:
                return
            self._end(job, "expired")
        logger.warning(
            "job %s expired after runner.job_max_seconds without its job-completed hook: %s",
            job_id,
            job.spec.describe(),
            extra={"job": job_id},
        )
        await self.leases.release(job_id)

    # --- the engine -----------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Shutdown began: no new job opens (the API serves on for the open ones)."""
        self._stopping = True

    def admits(self, runner_name: str) -> None:
        """:class:`UnknownRunner` unless ``runner.names`` allows ``runner_name`` (checked
        before a job costs anything, GitHub requests included)."""
        allowed = self._runners()
        if allowed and runner_name not in allowed:
            raise UnknownRunner(
                f"runner {runner_name!r} is not one this agent serves "
                f"(runner.names: {', '.join(allowed)}); add it there, or point this runner's "
                "RUNNER_AGENT_SOCKET at its own agent"
            )

    def current(self) -> list[Job]:
        """The open jobs, oldest first."""
        return sorted(self._open.values(), key=lambda j: j.created)

    def resync_gate(self) -> None:
        """Close or open the stop gate for the jobs open now (a supervisor that started
        after a job did)."""
        self._sync_gate()

    async def wait_idle(self, timeout: float) -> bool:  # noqa: ASYNC109
        """At shutdown: wait until no job is open, at most ``timeout`` seconds; whether
        none is."""
        if not self._open:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=timeout)
        return not self._open

    def _sync_gate(self) -> None:
        if self._open:
            self._idle.clear()
        else:
            self._idle.set()
        if self._gate is None:
            return
        if self._open:
            first = min(self._open.values(), key=lambda j: j.created)
            more = f" and {len(self._open) - 1} more" if len(self._open) > 1 else ""
            self._gate(f"job {first.id} is open ({first.spec.describe()}){more}")
        else:
            self._gate(None)

    @staticmethod
    def _info_labels(job: Job) -> tuple[str, str, str, str]:
        spec = job.spec
        workflow = spec.workflow or spec.workflow_ref or ""
        return (spec.repository or "", workflow, spec.job, spec.run_id)

    async def close(self) -> None:
        """Agent shutdown: stop the deadlines and release every lease (the open jobs'
        leases would lapse by themselves soon; see :mod:`~agent.jobs.leases`)."""
        for deadline in self._deadlines.values():
            deadline.cancel()
        self._deadlines.clear()
        if self._expiring:
            await asyncio.gather(*self._expiring, return_exceptions=True)
        await self.leases.close()


def _merged(old: list[str], new: list[str]) -> list[str]:
    if len(old) >= MAX_REQUESTS:
        return old
    return list(dict.fromkeys(old + new))[:MAX_REQUESTS]
