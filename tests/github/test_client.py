"""The REST client against the stub: pagination, retries, rate limits, errors, GHES."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from agent.github import errors
from tests.github.conftest import MakeClient
from tests.github.stub import Failure, Stub, job

JOBS = "/repos/octo/app/actions/runs/7/attempts/1/jobs"


async def test_every_page_is_followed(stub: Stub, make_client: MakeClient) -> None:
    stub.jobs[("octo/app", "7", "1")] = [job(f"r{i}", i, ["self-hosted"]) for i in range(230)]
    api = make_client()
    found = await api.get_all(JOBS, key="jobs", need="actions: read")
    assert [j["runner_name"] for j in found] == [f"r{i}" for i in range(230)]
    assert stub.requests[JOBS] == 3  # 100 per page
    assert found[150]["labels"] == ["self-hosted"]


async def test_a_rate_limit_is_waited_out_then_ok(stub: Stub, make_client: MakeClient) -> None:
    stub.jobs[("octo/app", "7", "1")] = [job("r", 1, [])]
    stub.fail(
        JOBS,
        Failure(429, headers={"Retry-After": "1"}),
        Failure(403, headers={"x-ratelimit-remaining": "0",
                              "x-ratelimit-reset": str(int(time.time()) + 1)}),
    )  # fmt: skip
    api = make_client()
    started = time.monotonic()
    found = await api.get_all(JOBS, key="jobs", need="actions: read")
    assert len(found) == 1
    assert stub.requests[JOBS] == 3
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured


async def test_a_rate_limit_past_the_deadline_fails_at_once(
    stub: Stub, make_client: MakeClient
) -> None:
    stub.fail(JOBS, Failure(429, headers={"Retry-After": "120"}))
    api = make_client()
    deadline = asyncio.get_running_loop().time() + 5
    started = time.monotonic()
    with pytest.raises(errors.RateLimited, match="resets in 120 s"):
        await api.get_all(JOBS, key="jobs", need="actions: read", deadline=deadline)
    assert time.monotonic() - started < 2
    assert stub.requests[JOBS] == 1


async def test_5xx_then_ok(stub: Stub, make_client: MakeClient) -> None:
    stub.jobs[("octo/app", "7", "1")] = [job("r", 1, [])]
    stub.fail(JOBS, Failure(502), Failure(503))
    assert len(await make_client().get_all(JOBS, key="jobs", need="actions: read")) == 1
    assert stub.requests[JOBS] == 3


async def test_5xx_until_the_attempts_run_out(stub: Stub, make_client: MakeClient) -> None:
    stub.fail(JOBS, *[Failure(500)] * 5)
    with pytest.raises(errors.Unavailable, match="answered 500"):
        await make_client(max_attempts=2).get_all(JOBS, key="jobs", need="actions: read")
    assert stub.requests[JOBS] == 2


async def test_malformed_json_is_named(stub: Stub, make_client: MakeClient) -> None:
    stub.fail(JOBS, Failure(200, body=b"<html>proxy login</html>"))
    with pytest.raises(
        errors.BadAnswer, match=re.escape("not JSON; is github.api_url GitHub's API")
    ):
        await make_client().get_all(JOBS, key="jobs", need="actions: read")
    assert stub.requests[JOBS] == 1  # not retried


async def test_a_token_without_permission_names_the_permission(
    stub: Stub, make_client: MakeClient
) -> None:
    stub.fail(JOBS, Failure(403, body=b'{"message": "Resource not accessible by integration"}'))
    with pytest.raises(errors.PermissionDenied) as info:
        await make_client().get_all(JOBS, key="jobs", need="actions: read")
    assert "Resource not accessible by integration" in str(info.value)
    assert "grant actions: read" in str(info.value)
    assert stub.job_token not in str(info.value)


async def test_bad_credentials_are_retried_once_then_named(
    stub: Stub, make_client: MakeClient
) -> None:
    stub.fail(JOBS, Failure(401), Failure(401))
    with pytest.raises(errors.BadCredentials, match=re.escape("check github.token_file")):
        await make_client().get_all(JOBS, key="jobs", need="actions: read")
    assert stub.requests[JOBS] == 2


async def test_a_next_page_elsewhere_is_not_followed(stub: Stub, make_client: MakeClient) -> None:
    stub.fail(
        JOBS,
        Failure(200, body=b'{"jobs": []}',
                headers={"Link": '<https://elsewhere.invalid/x?page=2>; rel="next"'}),
    )  # fmt: skip
    with pytest.raises(errors.BadAnswer, match="the token stays home"):
        await make_client().get_all(JOBS, key="jobs", need="actions: read")


async def test_a_stalled_answer_times_out_and_is_retried(
    stub: Stub, make_client: MakeClient
) -> None:
    stub.jobs[("octo/app", "7", "1")] = [job("r", 1, [])]
    stub.fail(JOBS, Failure(200, delay=5))
    api = make_client(request_timeout_seconds=1)
    assert len(await api.get_all(JOBS, key="jobs", need="actions: read")) == 1
    assert stub.requests[JOBS] == 2


async def test_a_proxys_password_never_reaches_an_error(
    stub: Stub, make_client: MakeClient
) -> None:
    from tests.support.agentproc import free_port

    api = make_client()
    settings = api._settings()
    proxied = settings.model_copy(
        update={
            "installer": settings.installer.model_copy(
                update={"http_proxy": f"http://user:s3cretpw@127.0.0.1:{free_port()}"}
            )
        }
    )
    api._settings = lambda: proxied
    with pytest.raises(errors.Unavailable) as info:
        await api.get_all(JOBS, key="jobs", need="actions: read")
    assert "s3cretpw" not in str(info.value)
    assert "ClientProxyConnectionError" in str(info.value) or "cannot reach" in str(info.value)
