"""The pod annotator: the running job's identity, as annotations on the agent's own pod.

Policy:
- the annotator keeps a *desired state*: the job opened most recently and still open,
  or none. The jobs engine tells it of each job that opens and ends (it is a
  ``JobWatcher``); both calls only note the change and wake the worker, so a job never
  waits on the API;
- one worker (a guarded task of its own: a failing API never touches readiness) applies
  the latest desired state with one JSON merge patch: on a job, the keys of :data:`KEYS`
  under ``kubernetes.annotation_prefix`` (strings, clipped to :data:`VALUE_MAX`; a field
  the job lacks is removed); with none, each key set to null, which removes it. Changes
  that come while a patch is in flight coalesce: only the latest is sent next;
- 5xx, 409, 429, timeouts and connection failures are retried with random exponential
  backoff (tenacity), up to ``kubernetes.max_attempts``; a newer change ends the retries
  at once. A permanent error (401, 403, 404, 422, an untrusted certificate, a missing
  token) gives that state up; either way the state is counted as an error and the
  reason is logged once per distinct message (a forbidden pod does not flood the log),
  and the next change is tried afresh;
- the keys that may be on the pod are remembered (all of them at start: a previous run
  of the agent may have left some), so the first pass clears what a crash left, and a
  reload that changes the prefix removes the old keys;
- at :meth:`Annotator.close` the worker stops, and if job annotations may still be on
  the pod one patch removes them, bounded by :data:`STOP_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

import tenacity

from agent.config import kubernetes as kube_config
from agent.kits import aiotasks
from agent.kube import client as kube_client
from agent.kube import errors
from agent.kube import metrics as kube_metrics

logger = logging.getLogger(__name__)

KEYS = ("repository", "workflow", "run-id", "run-attempt", "job", "runner")
"""The annotation keys, after the prefix."""
VALUE_MAX = 1024
"""Characters of one value at most: a pod's annotations hold 256 KiB in all."""
STOP_SECONDS = 2.0
"""The longest the last patch at stop may take: shutdown has the pod's grace to share."""
BACKOFF_MAX = 30.0


class JobSpecView(Protocol):
    """What the annotator reads of a job's spec (the jobs engine's ``JobSpec``)."""

    @property
    def runner_name(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def run_attempt(self) -> int: ...
    @property
    def job(self) -> str: ...
    @property
    def repository(self) -> str | None: ...
    @property
    def workflow(self) -> str | None: ...
    @property
    def workflow_ref(self) -> str | None: ...


class JobView(Protocol):
    """What the annotator reads of a job (the jobs engine's ``Job``)."""

    @property
    def id(self) -> str: ...
    @property
    def spec(self) -> JobSpecView: ...


def job_annotations(job: JobView | None, prefix: str) -> dict[str, str]:
    """The annotations that say ``job`` (none for no job), keys under ``prefix``."""
    if job is None:
        return {}
    spec = job.spec
    values = {
        "repository": spec.repository,
        "workflow": spec.workflow or spec.workflow_ref,
        "run-id": spec.run_id,
        "run-attempt": str(spec.run_attempt),
        "job": spec.job,
        "runner": spec.runner_name,
    }
    return {prefix + key: value[:VALUE_MAX] for key, value in values.items() if value}


class _Superseded(Exception):
    """A newer desired state came while this one was being retried."""


class Annotator:
    """Keeps the open job's annotations on the agent's own pod (see the module)."""

    def __init__(
        self,
        settings: Callable[[], kube_config.KubernetesSettings],
        metrics: kube_metrics.AnnotationMetrics,
        *,
        environ: Mapping[str, str] | None = None,
        client: kube_client.Client | None = None,
        backoff_seconds: float = 1.0,
        stop_seconds: float = STOP_SECONDS,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self.client = client or kube_client.Client(settings, environ=environ)
        self._waits = tenacity.wait_random_exponential(multiplier=backoff_seconds, max=BACKOFF_MAX)
        self._stop_seconds = stop_seconds
        self._open: dict[str, JobView] = {}
        self._changed = asyncio.Event()
        self._changed.set()  # the first pass clears what a previous run may have left
        self._on_pod = {settings().annotation_prefix + key for key in KEYS}
        """Keys that may be on the pod (ours): every one until a patch says otherwise."""
        self._sent: dict[str, str] | None = None
        """The annotations last applied; ``None`` before the first patch succeeds."""
        self._last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    # --- the jobs engine's watcher: must return at once and never raise --------------

    def opened(self, job: JobView) -> None:
        """``job`` opened: it is now the pod's job."""
        self._open[job.id] = job
        self._changed.set()

    def ended(self, job: JobView) -> None:
        """``job`` ended: the pod's job is the latest one still open, or none."""
        if self._open.pop(job.id, None) is not None:
            self._changed.set()

    def desired(self) -> JobView | None:
        """The job the pod should name: the most recently opened one still open."""
        return next(reversed(self._open.values()), None)

    # --- the worker ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker (on the running loop)."""
        self._task = aiotasks.create_guarded_task(self._run(), name="pod annotator")

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self._apply(self.desired())

    async def _apply(self, job: JobView | None) -> None:
        settings = self._settings()
        wanted = job_annotations(job, settings.annotation_prefix)
        if self._sent == wanted and self._on_pod == set(wanted):
            return  # the pod already says so (a job that opened and ended in between)
        patch: dict[str, str | None] = {key: None for key in sorted(self._on_pod - set(wanted))}
        patch.update(wanted)
        before = self._on_pod
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(settings.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(_transient),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if self._changed.is_set():
                        raise _Superseded
                    # Unsure while in flight: the keys may land even if the answer is lost.
                    self._on_pod = before | set(wanted)
                    try:
                        await self.client.patch_pod({"metadata": {"annotations": patch}})
                    except errors.KubeError as exc:
                        if not exc.transient:
                            self._on_pod = before  # answered: the pod did not change
                        raise
        except _Superseded:
            return
        except errors.KubeError as exc:
            self._metrics.updates.labels("error").inc()
            self._report(exc)
            return
        self._on_pod, self._sent = set(wanted), wanted
        self._metrics.updates.labels("ok").inc()
        if self._last_error is not None:
            logger.info("the pod's job annotations apply again")
            self._last_error = None
        logger.debug("pod annotations now name %s", job.id if job is not None else "no job")

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = exc.retry_after if isinstance(exc, errors.KubeError) else None
        return max(asked or 0.0, self._waits(state))

    async def _sleep(self, seconds: float) -> None:
        # Woken by a newer change: the next attempt then gives this state up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=seconds)

    def _report(self, exc: errors.KubeError) -> None:
        message = str(exc)
        if message == self._last_error:
            logger.debug("the pod's job annotations failed again: %s", message)
            return
        self._last_error = message
        log = logger.error if isinstance(exc, errors.NotConfigured) else logger.warning
        log(
            "cannot update the pod's job annotations (jobs run on regardless): %s",
            message,
            extra={"error": type(exc).__name__},
        )

    # --- the end ------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the worker; remove job annotations that may be on the pod (one patch,
        at most :data:`STOP_SECONDS`); close the client."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            if self._on_pod:
                await self._remove()
        finally:
            await self.client.close()

    async def _remove(self) -> None:
        patch = {"metadata": {"annotations": dict.fromkeys(sorted(self._on_pod))}}
        try:
            await asyncio.wait_for(
                self.client.patch_pod(patch, timeout=self._stop_seconds),
                timeout=self._stop_seconds,
            )
        except TimeoutError:
            exc: errors.KubeError = errors.Unavailable(
                f"no answer within {self._stop_seconds:.0f} s"
            )
        except errors.KubeError as failed:
            exc = failed
        else:
            self._on_pod = set()
            self._metrics.updates.labels("ok").inc()
            return
        self._metrics.updates.labels("error").inc()
        if str(exc) != self._last_error:
            logger.warning(
                "the pod's job annotations may be left on it at stop: %s",
                exc,
                extra={"error": type(exc).__name__},
            )


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, errors.KubeError) and exc.transient
