"""A job's start reads its repository's team config at its commit from GitHub (the stub),
through a real agent: the job gets what the file names, once per (repository, sha)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.github.stub import SHA, Failure, Stub, job
from tests.http.test_ensure_api import ARCHIVE, BODY, _config, post_ndjson
from tests.support.agentproc import Agent, Starter
from tests.support.server import Reply, Server

PATH = "/repos/octo/repo/contents/.github/runner-config.yml"


@pytest.fixture
def agent(start_agent: Starter, http_server: Server, stub: Stub, tmp_path: Path) -> Agent:
    token = tmp_path / "github.token"
    token.write_text(stub.job_token + "\n")
    config = _config(start_agent, http_server)
    config["github"] = {"api_url": stub.url, "token_file": str(token), "max_attempts": 2}
    http_server.route(ARCHIVE, Reply(body=BODY))
    return start_agent.start(config)


def start(run_id: str = "17", sha: str = SHA, **extra: Any) -> dict[str, Any]:
    return {
        "runner_name": "runner-1",
        "run_id": run_id,
        "run_attempt": 1,
        "job": "build",
        "repository": "octo/repo",
        "sha": sha,
        "claim": run_id * 40,
        **extra,
    }


async def complete(agent: Agent, job: dict[str, Any]) -> None:
    from tests.http.test_ensure_api import call_json

    status, _ = await call_json(
        agent, "POST", f"/v1/jobs/{job['id']}/complete", {"secret": job["secret"]}
    )
    assert status == 200


async def test_the_team_config_at_the_commit_is_installed_once_per_sha(
    agent: Agent, stub: Stub
) -> None:
    stub.files[("octo/repo", SHA, ".github/runner-config.yml")] = "features:\n  - tool\n"
    status, events = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 200, events
    [tool] = events[-1]["features"]
    assert (tool["id"], tool["result"]) == ("tool", "installed")
    await complete(agent, events[0])
    # The next job at the same commit: no request, the cached file, a cache hit.
    status, events = await post_ndjson(agent, "/v1/jobs", start(run_id="18"))
    assert status == 200, events
    assert events[-1]["features"][0]["result"] == "hit"
    assert stub.requests[PATH] == 1
    await complete(agent, events[0])


async def test_a_commit_without_a_team_config_gets_the_menu(agent: Agent, stub: Stub) -> None:
    status, events = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 200, events
    assert events[-1]["ok"] is True
    assert events[-1]["features"] == []
    assert stub.requests[PATH] == 1
    await complete(agent, events[0])


async def test_a_team_config_with_errors_fails_the_job_with_file_and_line(
    agent: Agent, stub: Stub
) -> None:
    stub.files[("octo/repo", SHA, ".github/runner-config.yml")] = "features:\n  - [tool\n"
    status, [error] = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 400, error
    message = error["error"]["message"]
    assert f"octo/repo@{SHA[:12]}:.github/runner-config.yml" in message
    assert ":3:" in message or "line 3" in message, message


async def test_a_github_that_refuses_fails_the_job_naming_the_permission(
    agent: Agent, stub: Stub
) -> None:
    stub.fail(PATH, Failure(403, body=b'{"message": "Resource not accessible by integration"}'))
    status, [error] = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 502, error
    assert error["error"]["code"] == "github_error"
    assert "grant contents: read" in error["error"]["message"]
    assert stub.job_token not in agent.logs()


JOBS = "/repos/octo/repo/actions/runs/17/attempts/1/jobs"


async def test_a_job_that_names_its_features_gets_those_not_the_menu(
    agent: Agent, stub: Stub
) -> None:
    stub.jobs[("octo/repo", "17", "1")] = [job("runner-1", 5, ["self-hosted", "feature:tool"])]
    status, events = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 200, events
    assert events[0]["sources"] == {"job labels": ["tool"]}
    assert [f["id"] for f in events[-1]["features"]] == ["tool"]
    assert stub.requests[JOBS] == 1
    await complete(agent, events[0])


async def test_labels_github_cannot_give_fall_back_to_the_menu_with_a_warning(
    agent: Agent, stub: Stub
) -> None:
    stub.fail(JOBS, Failure(403, body=b'{"message": "Resource not accessible by integration"}'))
    status, events = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 200, events
    assert events[0]["sources"] == {"runner menu": []}
    [warning] = events[0]["warnings"]
    assert "grant actions: read" in warning
    assert "the runner's menu applies" in warning
    await complete(agent, events[0])


async def test_a_repository_github_does_not_confirm_gets_no_rule_of_its_own(
    start_agent: Starter, http_server: Server, stub: Stub, tmp_path: Path
) -> None:
    # Job code claims a trusted repository for a job GitHub shows nowhere: that
    # repository's rule does not apply; the default (nothing) does.
    token = tmp_path / "github.token"
    token.write_text(stub.job_token)
    config = _config(start_agent, http_server)
    config["github"] = {"api_url": stub.url, "token_file": str(token), "max_attempts": 1}
    config["runner"] = {
        "policy": [{"repositories": ["octo/repo"], "features": ["tool"]}],
        "allowed_features": [],
    }
    agent = start_agent.start(config)
    status, [error] = await post_ndjson(agent, "/v1/jobs", start(requests=["tool"]))
    assert status == 403, error
    assert "runner.allowed_features" in error["error"]["message"]
    stub.jobs[("octo/repo", "18", "1")] = [job("runner-1", 5, ["self-hosted"])]
    http_server.route(ARCHIVE, Reply(body=BODY))
    status, events = await post_ndjson(agent, "/v1/jobs", start(run_id="18", requests=["tool"]))
    assert status == 200, events
    assert events[-1]["ok"] is True
