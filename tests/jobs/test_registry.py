"""The jobs engine on its own: a job's life, resuming by claim, one job per runner,
superseding with the secret, completion, expiry, the stop gate and the metrics."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from agent.jobs import metrics, registry

CLAIM = "a" * 40


def spec(runner: str = "r1", run_id: str = "100", job: str = "build") -> registry.JobSpec:
    return registry.JobSpec(
        runner_name=runner, run_id=run_id, run_attempt=1, job=job, repository="octo/repo"
    )


class Gate:
    """Records what the engine told the stop gate."""

    def __init__(self) -> None:
        self.calls: list[str | None] = []

    def __call__(self, reason: str | None) -> None:
        self.calls.append(reason)

    @property
    def closed(self) -> bool:
        return bool(self.calls) and self.calls[-1] is not None


async def test_a_repost_with_the_same_claim_resumes_the_same_job() -> None:
    jobs = registry.Jobs()
    first = await jobs.start(spec(), claim=CLAIM, requests=["node@20"])
    again = await jobs.start(spec(), claim=CLAIM, requests=["ninja"])
    assert not first.resumed
    assert again.resumed
    assert again.job is first.job
    assert again.job.secret == first.job.secret
    assert again.job.requests == ["node@20", "ninja"]
    await jobs.close()


async def test_a_runner_runs_one_job_at_a_time() -> None:
    jobs = registry.Jobs()
    first = await jobs.start(spec(), claim=CLAIM)
    with pytest.raises(registry.RunnerBusy) as busy:
        await jobs.start(spec(run_id="101"), claim="b" * 40)
    assert busy.value.job is first.job
    message = str(busy.value)
    assert first.job.id in message
    assert "job-completed hook did not run" in message
    # The same job name with another claim is another start of it: refused too.
    with pytest.raises(registry.RunnerBusy):
        await jobs.start(spec(), claim="b" * 40)
    # Another runner is another story (a host agent serves several).
    other = await jobs.start(spec(runner="r2"), claim=CLAIM)
    assert other.job.id != first.job.id
    await jobs.close()


async def test_superseding_needs_the_open_jobs_secret() -> None:
    jobs = registry.Jobs()
    first = await jobs.start(spec(), claim=CLAIM)
    with pytest.raises(registry.WrongSecret):
        await jobs.start(spec(run_id="101"), claim=CLAIM, supersede=(first.job.id, "nope"))
    assert first.job.open
    second = await jobs.start(
        spec(run_id="101"), claim=CLAIM, supersede=(first.job.id, first.job.secret)
    )
    assert second.superseded is first.job
    assert (first.job.state, first.job.result) == ("completed", "abandoned")
    assert [j.id for j in jobs.current()] == [second.job.id]
    await jobs.close()


async def test_completing_needs_the_secret_and_is_answered_twice() -> None:
    jobs = registry.Jobs()
    job = (await jobs.start(spec(), claim=CLAIM)).job
    with pytest.raises(registry.WrongSecret):
        await jobs.complete(job.id, "not-it", "succeeded")
    with pytest.raises(registry.UnknownJob):
        await jobs.complete("j-0000000000000000", job.secret, "succeeded")
    done = await jobs.complete(job.id, job.secret, "succeeded")
    assert (done.already, job.result) == (False, "succeeded")
    again = await jobs.complete(job.id, job.secret, "failed")
    assert again.already
    assert job.result == "succeeded"  # the first word stands
    with pytest.raises(registry.JobEnded):
        jobs.running(job.id, job.secret)
    # The runner is free again: its next job opens.
    nxt = await jobs.start(spec(run_id="101"), claim=CLAIM)
    assert nxt.job.open
    await jobs.close()


async def test_the_history_is_bounded() -> None:
    jobs = registry.Jobs(history=lambda: 2)
    ids = []
    for n in range(4):
        job = (await jobs.start(spec(run_id=str(n)), claim=CLAIM)).job
        await jobs.complete(job.id, job.secret, "succeeded")
        ids.append(job.id)
    with pytest.raises(registry.UnknownJob):
        jobs.find(ids[0], None)
    assert jobs.find(ids[3], None).result == "succeeded"
    await jobs.close()


async def test_the_stop_gate_is_closed_while_any_job_is_open() -> None:
    gate = Gate()
    jobs = registry.Jobs(gate=gate)
    a = (await jobs.start(spec("r1"), claim=CLAIM)).job
    assert gate.closed
    assert a.id in str(gate.calls[-1])
    b = (await jobs.start(spec("r2"), claim=CLAIM)).job
    await jobs.complete(a.id, a.secret, "succeeded")
    assert gate.closed  # r2's job still runs
    assert b.id in str(gate.calls[-1])
    await jobs.complete(b.id, b.secret, "succeeded")
    assert not gate.closed
    await jobs.close()


async def test_a_job_never_completed_expires_and_opens_the_gate() -> None:
    gate = Gate()
    jobs = registry.Jobs(gate=gate, max_seconds=lambda: 0.2)
    job = (await jobs.start(spec(), claim=CLAIM)).job
    assert gate.closed
    for _ in range(100):
        if not job.open:
            break
        await asyncio.sleep(0.02)
    assert (job.state, job.result) == ("completed", "expired")
    assert not gate.closed
    assert jobs.current() == []
    await jobs.close()


async def test_metrics_follow_the_job() -> None:
    reg = CollectorRegistry()
    jobs = registry.Jobs(metrics=metrics.JobMetrics(reg))
    s = registry.JobSpec(
        runner_name="r1",
        run_id="7",
        run_attempt=1,
        job="test",
        repository="octo/repo",
        workflow="CI",
    )
    job = (await jobs.start(s, claim=CLAIM)).job
    labels = {"repository": "octo/repo", "workflow": "CI", "job": "test", "run_id": "7"}
    assert reg.get_sample_value("runner_agent_job_info", labels) == 1
    jobs.setup_done(job, seconds=0.3)
    jobs.setup_done(job, seconds=9.0)  # counted once
    assert reg.get_sample_value("runner_agent_job_setup_seconds_count") == 1
    assert reg.get_sample_value("runner_agent_job_setup_seconds_sum") == pytest.approx(0.3)
    await jobs.complete(job.id, job.secret, "failed")
    assert reg.get_sample_value("runner_agent_job_info", labels) is None
    assert reg.get_sample_value("runner_agent_jobs_total", {"result": "failed"}) == 1
    await jobs.close()


async def test_open_jobs_and_a_jobs_requests_are_bounded() -> None:
    jobs = registry.Jobs(max_open=lambda: 3)
    for n in range(3):
        await jobs.start(spec(runner=f"r{n}"), claim=CLAIM)
    with pytest.raises(registry.TooManyJobs, match="3 jobs open"):
        await jobs.start(spec(runner="r9"), claim=CLAIM)
    job = jobs.current()[0]
    for n in range(40):
        jobs.add_requests(job, [f"tool{n}@{m}" for m in range(32)])
    assert len(job.requests) == registry.MAX_REQUESTS
    await jobs.close()


async def test_only_the_runners_listed_open_jobs() -> None:
    jobs = registry.Jobs(runners=lambda: ["r1", "r2"])
    await jobs.start(spec("r1"), claim=CLAIM)
    with pytest.raises(registry.UnknownRunner, match=r"runner\.names: r1, r2"):
        await jobs.start(spec("made-up"), claim=CLAIM)
    await jobs.close()


async def test_no_job_opens_once_shutdown_began_but_open_ones_complete() -> None:
    jobs = registry.Jobs()
    job = (await jobs.start(spec("r1"), claim=CLAIM)).job
    jobs.stop_accepting()
    with pytest.raises(registry.Stopping):
        await jobs.start(spec("r2"), claim=CLAIM)
    done = await jobs.complete(job.id, job.secret, "succeeded")
    assert not done.already
    await jobs.close()


async def test_matrix_legs_share_one_info_series_until_the_last_ends() -> None:
    reg = CollectorRegistry()
    jobs = registry.Jobs(metrics=metrics.JobMetrics(reg))
    legs = [(await jobs.start(spec(runner), claim=CLAIM)).job for runner in ("r1", "r2")]
    labels = {"repository": "octo/repo", "workflow": "", "job": "build", "run_id": "100"}
    await jobs.complete(legs[0].id, legs[0].secret, "succeeded")
    assert reg.get_sample_value("runner_agent_job_info", labels) == 1  # r2's leg runs on
    await jobs.complete(legs[1].id, legs[1].secret, "succeeded")
    assert reg.get_sample_value("runner_agent_job_info", labels) is None
    await jobs.close()


async def test_a_refused_start_supersedes_nothing() -> None:
    jobs = registry.Jobs()
    old = (await jobs.start(spec("r1"), claim=CLAIM)).job
    jobs.stop_accepting()
    with pytest.raises(registry.Stopping):
        await jobs.start(spec("r1", run_id="101"), claim=CLAIM, supersede=(old.id, old.secret))
    assert old.open  # still the runner's job, its leases still held
    await jobs.close()
