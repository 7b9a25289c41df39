"""The pod annotator through the real jobs engine, against the API server stub over TLS:
a job's identity is on the pod while it runs and gone when it ends, changes coalesce,
a rotated token applies, transient failures are retried and permanent ones reported
once (with the fix, without the token), an untrusted server is refused, a stalled API
never delays a job, and stopping removes an open job's annotations within its bound."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest

from agent.jobs import registry
from tests.kube.conftest import Counts, MakeAnnotator, Settings, eventually
from tests.kube.stub import ApiServer, Failure

CLAIM = "c" * 40
PREFIX = "runner-agent/"


def spec(
    runner: str = "arc-runner-0",
    run_id: str = "4242",
    *,
    job: str = "build",
    repository: str | None = "octo/repo",
    workflow: str | None = "CI",
) -> registry.JobSpec:
    return registry.JobSpec(
        runner_name=runner,
        run_id=run_id,
        run_attempt=2,
        job=job,
        repository=repository,
        workflow=workflow,
    )


def expected(runner: str = "arc-runner-0", run_id: str = "4242") -> dict[str, str]:
    return {
        f"{PREFIX}repository": "octo/repo",
        f"{PREFIX}workflow": "CI",
        f"{PREFIX}run-id": run_id,
        f"{PREFIX}run-attempt": "2",
        f"{PREFIX}job": "build",
        f"{PREFIX}runner": runner,
    }


async def started(api: ApiServer) -> None:
    """The first pass (clearing what a previous run may have left) is done."""
    await eventually(lambda: api.seen and api.seen[-1].answered, what="the first patch")


async def test_a_jobs_identity_is_on_the_pod_while_it_runs_and_gone_after(
    api: ApiServer, make_annotator: MakeAnnotator, counts: Counts
) -> None:
    annotator = make_annotator()
    jobs = registry.Jobs(watchers=[annotator])
    opened = await jobs.start(spec(), claim=CLAIM)
    await eventually(lambda: api.ours() == expected(), what="the job's annotations")
    # Others' annotations stay: a merge patch names our keys only.
    assert api.annotations()["actions.github.com/patch-id"] == "0"
    last = api.seen[-1]
    assert last.method == "PATCH"
    assert last.path == f"/api/v1/namespaces/{api.namespace}/pods/{api.pod}"
    assert last.content_type == "application/merge-patch+json"
    assert last.authorization == f"Bearer {api.token}"

    await jobs.complete(opened.job.id, opened.job.secret, "succeeded")
    await eventually(lambda: api.ours() == {}, what="the annotations removed")
    assert api.annotations() == {"actions.github.com/patch-id": "0"}
    assert api.applied[-1] == {"metadata": {"annotations": dict.fromkeys(sorted(expected()))}}
    assert (counts["ok"], counts["error"]) >= (2.0, 0.0)
    await jobs.close()


async def test_a_field_the_job_lacks_is_left_out_and_values_are_clipped(
    api: ApiServer, make_annotator: MakeAnnotator
) -> None:
    annotator = make_annotator()
    jobs = registry.Jobs(watchers=[annotator])
    await jobs.start(spec(repository=None, workflow=None, job="x" * 5000), claim=CLAIM)
    ours = await eventually(api.ours, what="the job's annotations")
    assert f"{PREFIX}repository" not in ours
    assert f"{PREFIX}workflow" not in ours
    assert ours[f"{PREFIX}job"] == "x" * 1024
    await jobs.close()


async def test_the_latest_open_job_is_on_the_pod_and_the_one_before_comes_back(
    api: ApiServer, make_annotator: MakeAnnotator
) -> None:
    annotator = make_annotator()
    jobs = registry.Jobs(watchers=[annotator])
    first = await jobs.start(spec(runner="r1", run_id="1"), claim=CLAIM)
    second = await jobs.start(spec(runner="r2", run_id="2"), claim=CLAIM)
    await eventually(lambda: api.ours() == expected("r2", "2"), what="the second job")
    await jobs.complete(second.job.id, second.job.secret)
    await eventually(lambda: api.ours() == expected("r1", "1"), what="the first job again")
    await jobs.complete(first.job.id, first.job.secret)
    await eventually(lambda: api.ours() == {}, what="no job")
    await jobs.close()


async def test_many_quick_changes_send_few_patches_and_end_in_the_last_state(
    api: ApiServer, make_annotator: MakeAnnotator
) -> None:
    api.delay = 0.2
    annotator = make_annotator()
    jobs = registry.Jobs(watchers=[annotator])
    for n in range(20):
        opened = await jobs.start(spec(run_id=str(n)), claim=CLAIM)
        await jobs.complete(opened.job.id, opened.job.secret)
    await jobs.start(spec(run_id="last"), claim=CLAIM)
    await eventually(lambda: api.ours() == expected(run_id="last"), what="the last job")
    # The first pass, then the state in force when it returned: 41 changes, 2 patches.
    assert len(api.seen) <= 3, [s.body for s in api.seen]
    await jobs.close()


async def test_a_rotated_token_is_read_at_the_next_request(
    api: ApiServer, settings: Settings, make_annotator: MakeAnnotator
) -> None:
    annotator = make_annotator()
    jobs = registry.Jobs(watchers=[annotator])
    opened = await jobs.start(spec(), claim=CLAIM)
    await eventually(lambda: api.ours() == expected(), what="the job's annotations")
    rotated = "kube-token-" + "r" * 40
    api.tokens = {rotated}  # the old token no longer works
    settings.token_file.write_text(rotated + "\n")
    await jobs.complete(opened.job.id, opened.job.secret)
    await eventually(lambda: api.ours() == {}, what="the annotations removed")
    assert api.seen[-1].authorization == f"Bearer {rotated}"
    assert all(s.answered == 200 for s in api.seen)
    await jobs.close()


async def test_a_503_and_a_timeout_are_retried(
    api: ApiServer, settings: Settings, make_annotator: MakeAnnotator, counts: Counts
) -> None:
    settings.change(request_timeout_seconds=1.0)
    annotator = make_annotator()
    await started(api)
    api.fail(
        Failure(503, b'{"kind":"Status","message":"etcdserver: leader changed","code":503}'),
        Failure(200, delay=3.0),  # answered after the request's timeout
    )
    jobs = registry.Jobs(watchers=[annotator])
    await jobs.start(spec(), claim=CLAIM)
    await eventually(lambda: api.ours() == expected(), what="annotations after retries")
    assert [s.answered for s in api.seen] == [200, 503, 0, 200]
    assert (counts["ok"], counts["error"]) == (2.0, 0.0)
    await jobs.close()


async def test_a_newer_change_ends_the_retries_of_an_older_one_at_once(
    api: ApiServer,
    settings: Settings,
    make_annotator: MakeAnnotator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # no jitter: 10 s
    settings.change(max_attempts=20)
    annotator = make_annotator(backoff_seconds=10.0)
    await started(api)
    api.fail(Failure(503))
    jobs = registry.Jobs(watchers=[annotator])
    opened = await jobs.start(spec(), claim=CLAIM)
    await eventually(lambda: len(api.seen) == 2 and api.seen[-1].answered, what="the 503")
    began = time.monotonic()
    await jobs.complete(opened.job.id, opened.job.secret)  # wakes the backoff
    await eventually(lambda: len(api.seen) == 3 and api.seen[-1].answered, what="the end")
    assert time.monotonic() - began < 2.0
    # The job's patch was given up for the newer state (no job), never sent again.
    assert [s.answered for s in api.seen] == [200, 503, 200]
    assert api.ours() == {}
    await jobs.close()


async def test_forbidden_is_reported_once_with_the_fix_and_without_the_token(
    api: ApiServer,
    make_annotator: MakeAnnotator,
    counts: Counts,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.kube")
    api.forbid = True
    annotator = make_annotator()
    await started(api)
    jobs = registry.Jobs(watchers=[annotator])
    for n in range(3):
        opened = await jobs.start(spec(run_id=str(n)), claim=CLAIM)
        await eventually(lambda n=n: len(api.seen) == 2 * n + 2, what=f"job {n} patched")
        await jobs.complete(opened.job.id, opened.job.secret)
        await eventually(lambda n=n: len(api.seen) == 2 * n + 3, what=f"job {n} cleared")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "forbidden (403)" in message
    assert "patch on pods in namespace arc-runners" in message
    assert 'cannot patch resource "pods"' in message  # the API server's own words
    assert api.token not in caplog.text
    assert all(s.answered == 403 for s in api.seen)
    assert (counts["ok"], counts["error"]) == (0.0, 7.0)
    await jobs.close()


async def test_an_untrusted_api_server_gets_no_request(
    api: ApiServer,
    settings: Settings,
    make_annotator: MakeAnnotator,
    counts: Counts,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.change(ca_file=settings.current.ca_file.parent / "other-ca.crt")  # see pki.py
    annotator = make_annotator()
    await eventually(lambda: counts["error"] == 1.0, what="the first pass refused")
    jobs = registry.Jobs(watchers=[annotator])
    await jobs.start(spec(), claim=CLAIM)
    await eventually(lambda: counts["error"] == 2.0, what="both states refused")
    assert api.seen == []  # TLS failed before any request (and any token) was sent
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "does not chain to kubernetes.ca_file" in warning.getMessage()
    await jobs.close()


async def test_a_stalled_api_never_delays_a_job_and_stopping_is_bounded(
    api: ApiServer, make_annotator: MakeAnnotator
) -> None:
    api.delay = 30.0
    annotator = make_annotator(stop_seconds=0.5)
    jobs = registry.Jobs(watchers=[annotator])
    began = time.monotonic()
    opened = await asyncio.wait_for(jobs.start(spec(), claim=CLAIM), timeout=1.0)
    await asyncio.wait_for(jobs.complete(opened.job.id, opened.job.secret), timeout=1.0)
    assert time.monotonic() - began < 0.5
    began = time.monotonic()
    await annotator.close()
    assert time.monotonic() - began < 1.5
    await jobs.close()


async def test_stopping_removes_an_open_jobs_annotations_within_its_bound(
    api: ApiServer, make_annotator: MakeAnnotator
) -> None:
    annotator = make_annotator(stop_seconds=1.0)
    jobs = registry.Jobs(watchers=[annotator])
    await jobs.start(spec(), claim=CLAIM)
    await eventually(lambda: api.ours() == expected(), what="the job's annotations")
    api.delay = 0.3
    began = time.monotonic()
    await annotator.close()
    assert time.monotonic() - began < 1.0
    assert api.ours() == {}
    assert api.annotations() == {"actions.github.com/patch-id": "0"}
    await jobs.close()


async def test_a_changed_prefix_removes_the_old_keys(
    api: ApiServer, settings: Settings, make_annotator: MakeAnnotator
) -> None:
    annotator = make_annotator()
    jobs = registry.Jobs(watchers=[annotator])
    first = await jobs.start(spec(runner="r1"), claim=CLAIM)
    await eventually(lambda: api.ours() == expected("r1"), what="the first job")
    settings.change(annotation_prefix="ci.example.com/")
    await jobs.complete(first.job.id, first.job.secret)
    await jobs.start(spec(runner="r2"), claim=CLAIM)
    await eventually(lambda: api.ours("ci.example.com/"), what="the new prefix")
    assert api.ours() == {}
    assert api.ours("ci.example.com/")["ci.example.com/runner"] == "r2"
    await jobs.close()
