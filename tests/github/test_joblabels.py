"""The labels a job asked for, found in its run's job list by its runner's name."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from agent.github import errors, joblabels
from agent.store import layout, locks, notes
from tests.github.conftest import MakeClient
from tests.github.stub import Stub, job

JOBS = "/repos/octo/app/actions/runs/7/attempts/1/jobs"


def labels_of(found: joblabels.RunningJob | None) -> tuple[str, ...]:
    assert found is not None
    return found.labels


def legs(count: int) -> list[dict[str, object]]:
    return [job(f"leg-{i}", i, ["self-hosted", f"feature:tool@{i}"]) for i in range(count)]


async def test_the_job_on_page_two_is_found(stub: Stub, make_client: MakeClient) -> None:
    stub.jobs[("octo/app", "7", "1")] = legs(150)
    found = await joblabels.JobLabels(make_client()).running("octo/app", "7", 1, "leg-120")
    assert labels_of(found) == ("self-hosted", "feature:tool@120")
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
    assert labels_of(found[255]) == ("self-hosted", "feature:tool@255")
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
    assert labels_of(found) == ("self-hosted", "feature:tool@2")
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
    assert labels_of(found) == ("self-hosted", "foo", "bar")


async def test_a_reused_runner_gets_its_job_in_progress(
    stub: Stub, make_client: MakeClient
) -> None:
    stub.jobs[("octo/app", "7", "1")] = [
        job("r", 1, ["feature:old"], status="completed"),
        job("r", 2, ["feature:new"]),
    ]
    found = await joblabels.JobLabels(make_client()).running("octo/app", "7", 1, "r")
    assert labels_of(found) == ("feature:new",)


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


def shelf(root: object) -> notes.Notes:
    return notes.Notes(layout.Store(root), locks.PosixLocks())  # type: ignore[arg-type]


async def test_agents_sharing_a_store_list_a_run_once(
    stub: Stub, make_client: MakeClient, tmp_path: Path
) -> None:
    # Eight agents (one store, eight clients), 32 legs each, all starting together.
    stub.jobs[("octo/app", "7", "1")] = legs(256)
    agents = [joblabels.JobLabels(make_client(), shelf(tmp_path)) for _ in range(8)]
    found = await asyncio.gather(
        *(agents[i % 8].running("octo/app", "7", 1, f"leg-{i}") for i in range(256))
    )
    assert all(f is not None for f in found)
    assert labels_of(found[200]) == ("self-hosted", "feature:tool@200")
    assert stub.requests[JOBS] == 3  # one listing of three pages, for every agent
    # A ninth agent starting later reads the note: no request.
    late = joblabels.JobLabels(make_client(), shelf(tmp_path))
    assert await late.running("octo/app", "7", 1, "leg-9") is not None
    assert stub.requests[JOBS] == 3


async def test_a_note_listed_before_the_leg_was_assigned_is_listed_again(
    stub: Stub, make_client: MakeClient, tmp_path: Path
) -> None:
    stub.jobs[("octo/app", "7", "1")] = legs(2)
    await joblabels.JobLabels(make_client(), shelf(tmp_path)).running("octo/app", "7", 1, "leg-0")
    stub.jobs[("octo/app", "7", "1")] = legs(3)
    other = joblabels.JobLabels(make_client(), shelf(tmp_path))
    assert await other.running("octo/app", "7", 1, "leg-2") is not None
    assert stub.requests[JOBS] == 2
    # Not on the list at all, in a listing taken after the ask began: None, no third.
    assert await other.running("octo/app", "7", 1, "nobody") is None
    assert stub.requests[JOBS] == 3


async def test_a_damaged_note_is_no_note(
    stub: Stub, make_client: MakeClient, tmp_path: Path
) -> None:
    stub.jobs[("octo/app", "7", "1")] = legs(2)
    store = shelf(tmp_path)
    await store.write("jobs", "octo/app/7/1", b'{"began": 0, "runners": {"leg-0": [["x"]]}}')
    await store.write("running", "octo/app/7/1/leg-1", b"[not json")
    labels = joblabels.JobLabels(make_client(), store)
    assert await labels.running("octo/app", "7", 1, "leg-1") is not None
    assert stub.requests[JOBS] == 1


async def test_an_in_progress_delivery_answers_without_a_request(
    stub: Stub, make_client: MakeClient, tmp_path: Path
) -> None:
    store = shelf(tmp_path)
    delivered = joblabels.Delivered(
        "in_progress", "octo/app", "7", 1, 42, "leg-5", ("self-hosted", "feature:go")
    )
    assert await joblabels.note_delivery(store, delivered, scope=stub.url) is True
    found = await joblabels.JobLabels(make_client(), store).running("octo/app", "7", 1, "leg-5")
    assert labels_of(found) == ("self-hosted", "feature:go")
    assert stub.requests[JOBS] == 0
    with pytest.raises(errors.GitHubError, match="not owner/name"):
        await joblabels.note_delivery(
            store, joblabels.Delivered("in_progress", "../x", "7", 1, 1, "r", ()), scope=stub.url
        )


async def test_a_reused_runner_is_never_answered_with_a_job_it_finished(
    stub: Stub, make_client: MakeClient, tmp_path: Path
) -> None:
    # GitHub still shows the runner's first job in progress (its status lags), and a
    # late in_progress delivery of it arrives: neither answers the runner's next start.
    stub.jobs[("octo/app", "7", "1")] = [job("r", 11, ["feature:first"])]
    store = shelf(tmp_path)
    agent = joblabels.JobLabels(make_client(), store)
    first = await agent.running("octo/app", "7", 1, "r")
    assert first is not None
    assert first.job_id == 11
    await agent.finished("octo/app", "7", 1, "r", first.job_id)
    late = joblabels.Delivered("in_progress", "octo/app", "7", 1, 11, "r", ("feature:first",))
    await joblabels.note_delivery(store, late, scope=stub.url)
    assert await agent.running("octo/app", "7", 1, "r") is None
    # Another agent on the store (the pod restarted) knows it too, from the store.
    restarted = joblabels.JobLabels(make_client(), shelf(tmp_path))
    assert await restarted.running("octo/app", "7", 1, "r") is None
    stub.jobs[("octo/app", "7", "1")] = [
        job("r", 11, ["feature:first"]),
        job("r", 12, ["feature:second"]),
    ]
    second = await restarted.running("octo/app", "7", 1, "r")
    assert second is not None
    assert (second.job_id, second.labels) == (12, ("feature:second",))


async def test_another_pods_note_that_may_predate_the_ask_is_listed_again(
    stub: Stub, make_client: MakeClient, tmp_path: Path
) -> None:
    # A pod whose clock is ahead left a listing that seems newer than this ask, without
    # this runner: within the slack it is not believed, and GitHub is asked.
    stub.jobs[("octo/app", "7", "1")] = legs(3)
    store = shelf(tmp_path)
    runners = {"leg-0": [["in_progress", "", ["feature:x"], 5]]}
    for began in (time.time() + 3, float("inf"), time.time() + 3600):
        note = {"began": began, "runners": runners}
        await store.write("jobs", f"{stub.url} octo/app/7/1", json.dumps(note).encode())
        found = await joblabels.JobLabels(make_client(), store).running("octo/app", "7", 1, "leg-2")
        assert labels_of(found) == ("self-hosted", "feature:tool@2")
    assert stub.requests[JOBS] == 3


async def test_agents_of_different_apis_share_no_listing(
    stub: Stub, make_client: MakeClient, tmp_path: Path
) -> None:
    stub.jobs[("octo/app", "7", "1")] = legs(2)
    here = joblabels.JobLabels(make_client(), shelf(tmp_path))
    assert await here.running("octo/app", "7", 1, "leg-0") is not None
    other_api = stub.url.replace("127.0.0.1", "localhost")  # one store, another instance
    there = joblabels.JobLabels(make_client(api_url=other_api), shelf(tmp_path))
    assert await there.running("octo/app", "7", 1, "leg-1") is not None
    assert stub.requests[JOBS] == 2
