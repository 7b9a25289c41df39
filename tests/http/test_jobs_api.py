"""The job routes through a real agent over its real unix socket: a job's start streams
the job event then the ensure events of the runner's menu; a re-post resumes; one job per
runner; superseding; completion with the secret or an admin token; bad bodies; metrics."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.http.test_ensure_api import ARCHIVE, BODY, _config, call_json, job_start, post_ndjson
from tests.support.agentproc import Agent, Starter, http_get
from tests.support.server import Reply, Server


@pytest.fixture
def agent(start_agent: Starter, http_server: Server) -> Agent:
    config = _config(start_agent, http_server)
    config["runner"] = {"labels": ["self-hosted", "linux", "feature:tool"]}
    running = start_agent.start(config)
    running.wait_for(lambda: running.get("/readyz")[0] == 200, what="ready")
    return running


async def test_a_job_start_ensures_the_runners_menu_and_streams_the_job_first(
    agent: Agent, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY))
    status, events = await post_ndjson(agent, "/v1/jobs", job_start(workflow="CI"))
    assert status == 200, events
    job = events[0]
    assert job["event"] == "job"
    assert job["id"].startswith("j-")
    assert len(job["secret"]) >= 32
    assert job["resumed"] is False
    assert job["store"] == str(agent.config.parent / "store")
    assert [e["event"] for e in events[1:3]] == ["plan", "queued"]
    result = events[-1]
    assert result["event"] == "result"
    assert result["ok"] is True
    [tool] = result["features"]
    assert tool["result"] == "installed"
    assert tool["entry"].startswith(job["store"] + "/")

    status, current = await call_json(agent, "GET", "/v1/jobs/current")
    assert status == 200
    [info] = current["jobs"]
    assert info["id"] == job["id"]
    assert info["state"] == "running"
    assert info["requests"] == ["tool"]
    assert (info["runner_name"], info["run_id"], info["workflow"]) == ("runner-1", "17", "CI")
    assert info["created"].endswith("Z")
    assert "secret" not in info

    _, metrics = http_get(agent.base + "/metrics")
    text = metrics.decode()
    assert (
        'runner_agent_job_info{job="build",repository="octo/repo",run_id="17",workflow="CI"} 1.0'
        in text
    )
    assert "runner_agent_job_setup_seconds_count 1.0" in text

    # The stream broke (or the agent was slow): the same claim resumes the same job.
    status, again = await post_ndjson(agent, "/v1/jobs", job_start(workflow="CI"))
    assert status == 200
    assert (again[0]["id"], again[0]["secret"], again[0]["resumed"]) == (
        job["id"],
        job["secret"],
        True,
    )
    assert again[-1]["features"][0]["result"] == "hit"

    path = f"/v1/jobs/{job['id']}/complete"
    status, done = await call_json(
        agent, "POST", path, {"secret": job["secret"], "result": "succeeded"}
    )
    assert status == 200, done
    assert (done["result"], done["released"]) == ("succeeded", 1)
    _, current = await call_json(agent, "GET", "/v1/jobs/current")
    assert current == {"jobs": []}
    _, metrics = http_get(agent.base + "/metrics")
    text = metrics.decode()
    assert 'runner_agent_jobs_total{result="succeeded"} 1.0' in text
    assert "runner_agent_job_info{" not in text


async def test_one_job_per_runner_unless_the_hook_supersedes_with_the_secret(
    agent: Agent, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY))
    _, first = await post_ndjson(agent, "/v1/jobs", job_start())
    old = first[0]
    status, busy = await post_ndjson(agent, "/v1/jobs", job_start(run_id="18", claim="d" * 40))
    assert status == 409
    error = busy[0]["error"]
    assert error["code"] == "runner_busy"
    assert old["id"] in error["message"]
    assert error["details"] == {"job": old["id"], "runner_name": "runner-1"}

    wrong = {"id": old["id"], "secret": "w" * 43}
    status, refused = await post_ndjson(
        agent, "/v1/jobs", job_start(run_id="18", claim="d" * 40, supersede=wrong)
    )
    assert (status, refused[0]["error"]["code"]) == (403, "wrong_secret")

    held = {"id": old["id"], "secret": old["secret"]}
    status, second = await post_ndjson(
        agent, "/v1/jobs", job_start(run_id="18", claim="d" * 40, supersede=held)
    )
    assert status == 200, second
    assert second[0]["id"] != old["id"]
    _, current = await call_json(agent, "GET", "/v1/jobs/current")
    assert [j["id"] for j in current["jobs"]] == [second[0]["id"]]
    # The superseded job cannot be used any more, and its completion says it ended.
    path = f"/v1/jobs/{old['id']}/complete"
    status, done = await call_json(agent, "POST", path, {"secret": old["secret"]})
    assert (status, done["already"], done["result"]) == (200, True, "abandoned")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"claim": "short"}, "claim"),
        ({"run_id": "12; rm -rf /"}, "run_id"),
        ({"runner_name": "bad\nname"}, "runner_name"),
        ({"run_attempt": 0}, "run_attempt"),
        ({"sha": "not-hex"}, "sha"),
        ({"gpus": {"kind": "some"}}, "gpus.kind"),
        ({"requests": ["node"] * 33}, "requests"),
        ({"supersede": {"id": "../../x", "secret": "s"}}, "supersede.id"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_a_bad_job_start_names_the_field_and_opens_nothing(
    agent: Agent, change: dict[str, Any], field: str
) -> None:
    status, answer = await post_ndjson(agent, "/v1/jobs", job_start(**change))
    assert status == 400, answer
    fields = [d["field"] for d in answer[0]["error"]["details"]]
    assert field in fields
    _, current = await call_json(agent, "GET", "/v1/jobs/current")
    assert current == {"jobs": []}


async def test_an_unknown_feature_is_refused_before_a_job_opens(agent: Agent) -> None:
    status, answer = await post_ndjson(agent, "/v1/jobs", job_start(requests=["nosuchtool@1"]))
    assert status in (400, 422), answer
    assert "nosuchtool" in answer[0]["error"]["message"]
    _, current = await call_json(agent, "GET", "/v1/jobs/current")
    assert current == {"jobs": []}


async def test_completing_an_unknown_job_is_404_with_what_it_means(agent: Agent) -> None:
    status, answer = await call_json(
        agent, "POST", "/v1/jobs/j-0123456789abcdef/complete", {"secret": "s" * 43}
    )
    assert status == 404
    assert "restarted" in answer["error"]["message"]


async def test_a_job_token_cannot_complete_without_the_secret_but_an_admin_can(
    start_agent: Starter, http_server: Server
) -> None:
    job_token, admin_token = "j" * 40, "a" * 40
    (start_agent.workdir / "job.token").write_text(job_token)
    (start_agent.workdir / "admin.token").write_text(admin_token)
    config = _config(
        start_agent,
        http_server,
        job_token_file=str(start_agent.workdir / "job.token"),
        admin_token_file=str(start_agent.workdir / "admin.token"),
    )
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")

    async def call(token: str, method: str, path: str, body: Any) -> tuple[int, Any]:
        connector = aiohttp.UnixConnector(path=str(agent.socket))
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(method, f"http://agent{path}", json=body, headers=headers) as resp,
        ):
            text = await resp.text()
            return resp.status, text

    status, text = await call(job_token, "POST", "/v1/jobs", job_start())
    assert status == 200, text
    job = json.loads(text.splitlines()[0])
    path = f"/v1/jobs/{job['id']}/complete"
    status, text = await call(job_token, "POST", path, {})
    assert status == 403, text
    assert "secret" in text
    assert job["secret"] not in text
    status, text = await call(admin_token, "POST", path, {"result": "cancelled"})
    assert status == 200, text
    assert json.loads(text)["result"] == "cancelled"
