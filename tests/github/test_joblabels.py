"""The labels a job asked for, found in its run's job list by its runner's name."""

from __future__ import annotations

import asyncio

import pytest

from agent.github import errors, joblabels
from tests.github.conftest import MakeClient
from tests.github.stub import Stub, job

JOBS = "/repos/octo/app/actions/runs/7/attempts/1/jobs"


def legs(count: int) -> list[dict[str, object]]:
    return [job(f"leg-{i}", i, ["self-hosted", f"feature:tool@{i}"]) for i in range(count)]


async def test_the_job_on_page_two_is_found(stub: Stub, make_client: MakeClient) -> None:
    stub.jobs[("octo/app", "7", "1")] = legs(150)
    found = await joblabels.JobLabels(make_client()).running("octo/app", "7", 1, "leg-120")
    assert found == joblabels.RunningJob(("self-hosted", "feature:tool@120"))
    assert stub.requests[JOBS] == 2


async def test_no_job_on_this_runner_is_none(stub: Stub, make_client: MakeClient) -> None:
    stub.jobs[("octo/app", "7", "1")] = legs(3)
    assert await joblabels.JobLabels(make_client()).running("octo/app", "7", 1, "other") is None


async def test_a_matrix_lists_the_run_once(stub: Stub, make_client: MakeClient) -> None:
    stub.jobs[("octo/app", "7", "1")] = legs(256)
    labels = joblabels.JobLabels(make_client())
    found = await asyncio.gather(
        *(labels.running("octo/app", "7", 1, f"leg-{i}") for i in range(256))
    )
    assert found[255] == joblabels.RunningJob(("self-hosted", "feature:tool@255"))
    assert stub.requests[JOBS] == 3  # one listing of three pages for all 256 legs
    # Later legs find themselves in the cached list: no request.
    await labels.running("octo/app", "7", 1, "leg-3")
    assert stub.requests[JOBS] == 3


async def test_a_leg_assigned_after_the_listing_reads_it_again(
    stub: Stub, make_client: MakeClient
) -> None:
    stub.jobs[("octo/app", "7", "1")] = legs(2)
    labels = joblabels.JobLabels(make_client())
    await labels.running("octo/app", "7", 1, "leg-0")
    stub.jobs[("octo/app", "7", "1")] = legs(3)  # leg-2 got its runner since
    found = await labels.running("octo/app", "7", 1, "leg-2")
    assert found == joblabels.RunningJob(("self-hosted", "feature:tool@2"))
    assert stub.requests[JOBS] == 2


async def test_the_published_payloads_job_is_read(stub: Stub, make_client: MakeClient) -> None:
    from tests.github.stub import fixture

    jobs = fixture("list-jobs-for-workflow-run-attempt.json")["jobs"]
    stub.jobs[("octo/app", "7", "1")] = jobs
    labels = joblabels.JobLabels(make_client())
    # As published, that job is completed: it is not what the runner runs now.
    assert await labels.running("octo/app", "7", 1, "my runner") is None
    stub.jobs[("octo/app", "7", "1")] = [{**jobs[0], "status": "in_progress"}]
    found = await labels.running("octo/app", "7", 1, "my runner")
    assert found == joblabels.RunningJob(("self-hosted", "foo", "bar"))


async def test_a_reused_runner_gets_its_job_in_progress(
    stub: Stub, make_client: MakeClient
) -> None:
    stub.jobs[("octo/app", "7", "1")] = [
        job("r", 1, ["feature:old"], status="completed"),
        job("r", 2, ["feature:new"]),
    ]
    found = await joblabels.JobLabels(make_client()).running("octo/app", "7", 1, "r")
    assert found == joblabels.RunningJob(("feature:new",))


@pytest.mark.parametrize(
    ("repository", "run_id"),
    [("a/../../orgs/x/actions/secrets?#", "7"), ("octo/..", "7"), ("octo/app", "7/../../x")],
)
async def test_a_path_in_a_name_is_refused_before_any_request(
    stub: Stub, make_client: MakeClient, repository: str, run_id: str
) -> None:
    with pytest.raises(errors.GitHubError):
        await joblabels.JobLabels(make_client()).running(repository, run_id, 1, "r")
    assert sum(stub.requests.values()) == 0
