"""Policy through a real agent on every path: a job's start, its explicit ensure, and a
direct /v1/ensure that names another repository while a job is open."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.http.test_ensure_api import ARCHIVE, BODY, _config, ensure, job_start, post_ndjson
from tests.support.agentproc import Agent, Starter
from tests.support.server import Reply, Server


@pytest.fixture
def agent(start_agent: Starter, http_server: Server, tmp_path: Path) -> Agent:
    config = _config(start_agent, http_server)
    admin = tmp_path / "admin.token"
    admin.write_text("admin-secret-0123456789\n")
    config["server"]["admin_token_file"] = str(admin)
    config["runner"] = {
        "policy": [
            {"repositories": ["octo/tools-*"], "features": ["tool"]},
            {"repositories": ["octo/*"], "features": ["node"]},
        ],
        "allowed_features": [],
    }
    http_server.route(ARCHIVE, Reply(body=BODY))
    running = start_agent.start(config)
    running.wait_for(lambda: running.get("/readyz")[0] == 200, what="ready")
    return running


async def test_a_repository_outside_its_allow_list_fails_its_job(agent: Agent) -> None:
    status, [error] = await post_ndjson(
        agent, "/v1/jobs", job_start(repository="octo/app", requests=["tool"])
    )
    assert status == 403, error
    assert error["error"]["code"] == "policy"
    assert (
        "feature tool is not allowed for octo/app by runner.policy[1] (octo/*)"
        in (error["error"]["message"])
    )
    status, events = await post_ndjson(
        agent, "/v1/jobs", job_start(repository="octo/tools-ci", requests=["tool"], claim="d" * 40)
    )
    assert status == 200, events
    assert events[-1]["ok"] is True


async def test_a_direct_ensure_naming_another_repository_is_refused(agent: Agent) -> None:
    status, events = await post_ndjson(agent, "/v1/jobs", job_start(repository="octo/app"))
    assert status == 200, events
    job = {"id": events[0]["id"], "secret": events[0]["secret"]}
    # Job code of octo/app asks as if it were octo/tools-ci, with or without its job.
    status, [error] = await ensure(agent, {"requests": ["tool"], "repository": "octo/tools-ci"})
    assert status == 403
    assert "may name octo/tools-ci only with its job" in error["error"]["message"]
    status, [error] = await ensure(
        agent, {"requests": ["tool"], "repository": "octo/tools-ci", "job": job}
    )
    assert status == 403
    assert f"job {job['id']} is of octo/app, not octo/tools-ci" in error["error"]["message"]
    # Its own job's policy applies to its explicit steps, and no repository is the default.
    status, [error] = await ensure(agent, {"requests": ["tool"], "job": job})
    assert (status, error["error"]["code"]) == (403, "policy")
    status, [error] = await ensure(agent, {"requests": ["tool"]})
    assert "a request that names no repository" in error["error"]["message"]


async def test_an_admin_token_bypasses_policy(agent: Agent) -> None:
    import aiohttp

    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            "http://agent/v1/ensure",
            json={"requests": ["tool"]},
            headers={"Authorization": "Bearer admin-secret-0123456789"},
        ) as resp,
    ):
        assert resp.status == 200
        lines = [line async for line in resp.content if line.strip()]
    assert b'"ok": true' in lines[-1] or b'"ok":true' in lines[-1]
