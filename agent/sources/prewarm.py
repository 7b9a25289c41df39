"""Pre-warming: installing a queued job's features before its runner asks.

Policy:
- a ``workflow_job`` delivery with action ``queued`` (its signature checked by
  :mod:`agent.http.webhooks`) is offered to a bounded queue (``github.prewarm_queue``);
  a full queue refuses it, so GitHub shows the delivery failed rather than it vanishing;
- one worker takes them in order: the requests are the team config at the job's
  ``head_sha`` (when github credentials are set), the menu of each label that
  ``github.scale_sets`` maps, and the job's own ``feature:`` labels; policy applies first,
  for the job's repository, as it would at the job's start: a job with a refused request
  is not pre-warmed at all (its start will be refused the same way), and is counted;
- installs go through the same coordinator as every ensure, so a job that starts while
  its features are being pre-warmed waits for that install, never a second one;
- every outcome is counted in ``runner_agent_prewarm_installs_total{result}`` and logged;
  no failure stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from agent.catalog import loading as catalog_loading
from agent.catalog import lockfile
from agent.config import models
from agent.github import contents
from agent.github import errors as github_errors
from agent.install import coordinator, plans
from agent.platform import detect
from agent.platform import plans as wire
from agent.sources import errors, resolution, teamfiles

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Queued:
    """What a queued ``workflow_job`` delivery says of the job."""

    delivery: str
    repository: str
    head_sha: str | None
    labels: tuple[str, ...]
    name: str


class PrewarmMetrics:
    """``runner_agent_prewarm_installs_total{result}``."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.installs = Counter(
            "runner_agent_prewarm_installs",
            "Features pre-warmed for queued jobs, by result: installed, hit (already "
            "there), failed, refused (outside runner.policy) or unresolvable.",
            ["result"],
            registry=registry,
        )


class Prewarmer:
    """The queue of jobs to pre-warm and its one worker."""

    def __init__(
        self,
        settings: Callable[[], models.Settings],
        catalog: Callable[[], catalog_loading.Catalog | None],
        installs: coordinator.Coordinator,
        team_configs: contents.TeamConfigs,
        metrics: PrewarmMetrics,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._installs = installs
        self._team_configs = team_configs
        self.metrics = metrics
        self.queue: asyncio.Queue[Queued] = asyncio.Queue(maxsize=settings().github.prewarm_queue)
        self.done = 0
        """Jobs the worker has finished with (the tests wait on it)."""

    def offer(self, job: Queued) -> bool:
        """Queue ``job``; False when the queue is full."""
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            return False
        return True

    async def run(self) -> None:
        """The worker: forever, one queued job at a time."""
        while True:
            job = await self.queue.get()
            try:
                await self.warm(job)
            except Exception:  # one bad delivery must not stop pre-warming
                logger.exception("pre-warm of %s (delivery %s) failed", job.name, job.delivery)
            finally:
                self.done += 1
                self.queue.task_done()

    def _requests(self, job: Queued) -> list[str]:
        github = self._settings().github
        labels: list[str] = []
        for label in job.labels:
            labels.extend(github.scale_sets.get(label, []))
        labels.extend(label for label in job.labels if label.lower().startswith("feature:"))
        return labels

    async def warm(self, job: Queued) -> None:
        """Install what ``job`` will ask for (see the module)."""
        settings = self._settings()
        catalog = self._catalog()
        if catalog is None:
            logger.warning("pre-warm of %s skipped: the catalog is still loading", job.name)
            return
        team_doc: wire.JsonObject | None = None
        lock: lockfile.Lock | None = None
        if settings.github.configured and job.head_sha:
            seconds = settings.github.request_timeout_seconds * settings.github.max_attempts
            team, locked = await asyncio.gather(
                teamfiles.at_commit(
                    self._team_configs, job.repository, job.head_sha, seconds=seconds
                ),
                teamfiles.lock_at_commit(
                    self._team_configs, job.repository, job.head_sha, seconds=seconds
                ),
                return_exceptions=True,
            )
            # Each on its own: a bad lock still leaves the team file to pre-warm.
            for name, got in (("team config", team), ("lock", locked)):
                if isinstance(got, errors.SourceError):
                    logger.warning("pre-warm of %s: no %s (%s)", job.name, name, got.message)
                elif isinstance(got, BaseException):
                    raise got
            team_doc = None if isinstance(team, BaseException) else team
            lock = None if isinstance(locked, BaseException) else locked
        labels = self._requests(job)
        if not labels and team_doc is None:
            return
        target = await asyncio.to_thread(detect.detect)
        try:
            plan = (
                await asyncio.to_thread(
                    resolution.resolve_now,
                    catalog,
                    settings,
                    target,
                    labels,
                    [],
                    team_doc,
                    {},
                    job.repository,
                    lock,
                )
            ).to_data()
        except errors.SourceError as exc:
            result = "refused" if isinstance(exc, errors.Refused) else "unresolvable"
            self.metrics.installs.labels(result).inc()
            logger.warning("pre-warm of %s %s: %s", job.name, result, exc.message)
            return
        except github_errors.GitHubError as exc:
            self.metrics.installs.labels("failed").inc()
            logger.warning("pre-warm of %s failed: %s", job.name, exc)
            return

        async def count(event: wire.Event) -> None:
            if event["event"] == "done":
                hit = event.get("result") == "hit"
                self.metrics.installs.labels("hit" if hit else "installed").inc()
            elif event["event"] == "failed":
                self.metrics.installs.labels("failed").inc()

        outcome = plans.result(plan, await plans.run(self._installs, plan, count))
        logger.info(
            "pre-warmed %s of %s: %s",
            job.name,
            job.repository,
            ", ".join(f"{f['id']} {f['result']}" for f in outcome["features"]) or "nothing",
            extra={"delivery": job.delivery},
        )
