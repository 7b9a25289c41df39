"""The jobs engine tells its watchers (the pod annotator) of each job that opens and
ends, however it ends, never of a resumed one; a watcher that raises is logged and the
job goes on."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent.jobs import registry
from tests.jobs.test_registry import CLAIM, spec


class Watcher:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def opened(self, job: registry.Job) -> None:
        self.events.append(("opened", job.id, job.state))

    def ended(self, job: registry.Job) -> None:
        self.events.append(("ended", job.id, job.result or ""))


class Broken:
    def opened(self, job: registry.Job) -> None:
        raise RuntimeError("the watcher is broken")

    def ended(self, job: registry.Job) -> None:
        raise RuntimeError("the watcher is broken")


async def test_watchers_hear_of_each_job_that_opens_and_ends_however_it_ends() -> None:
    watcher = Watcher()
    jobs = registry.Jobs(watchers=[watcher], max_seconds=lambda: 0.05)
    first = await jobs.start(spec(), claim=CLAIM)
    await jobs.start(spec(), claim=CLAIM)  # a re-post resumes: nothing new
    second = await jobs.start(
        spec(run_id="101"), claim=CLAIM, supersede=(first.job.id, first.job.secret)
    )
    await jobs.complete(second.job.id, second.job.secret, "succeeded")
    await jobs.complete(second.job.id, second.job.secret, "succeeded")  # already: nothing
    third = await jobs.start(spec(run_id="102"), claim=CLAIM)
    while third.job.open:  # its deadline
        await asyncio.sleep(0.01)
    assert watcher.events == [
        ("opened", first.job.id, "setting-up"),
        ("ended", first.job.id, "abandoned"),
        ("opened", second.job.id, "setting-up"),
        ("ended", second.job.id, "succeeded"),
        ("opened", third.job.id, "setting-up"),
        ("ended", third.job.id, "expired"),
    ]
    await jobs.close()


async def test_a_watcher_that_raises_is_logged_and_never_fails_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watcher = Watcher()
    jobs = registry.Jobs(watchers=[Broken(), watcher])
    opened = await jobs.start(spec(), claim=CLAIM)
    done = await jobs.complete(opened.job.id, opened.job.secret, "succeeded")
    assert done.job.result == "succeeded"
    assert [e[0] for e in watcher.events] == ["opened", "ended"]  # the next one still hears
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        f"a job watcher failed on job {opened.job.id} opened",
        f"a job watcher failed on job {opened.job.id} ended",
    ]
    assert jobs.current() == []
    await jobs.close()
