"""End to end through a real agent process: with RUNNER_AGENT_KUBERNETES__ANNOTATE_POD
and the pod's POD_NAME and POD_NAMESPACE, a job started through the agent's API is on
the stub's pod while it runs and gone when it completes, and a stop removes an open
job's; enabled outside a pod, the agent serves and is ready, with one error logged and
counted."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.kube import incluster
from tests.http.test_ensure_api import call_json, job_start, post_ndjson
from tests.kube import pki as pki_
from tests.kube.conftest import eventually
from tests.kube.stub import ApiServer, serve
from tests.support.agentproc import Agent, Starter, http_get

PREFIX = "runner-agent/"


def _namespace() -> str:
    # The file wins over POD_NAMESPACE, as in a pod: a test run inside one reads it.
    try:
        return incluster.NAMESPACE_FILE.read_text().strip()
    except OSError:
        return "arc-runners"


@pytest.fixture
async def pod_api(pki: pki_.Pki) -> AsyncIterator[ApiServer]:
    async with serve(ApiServer(namespace=_namespace()), pki.server) as served:
        yield served


def _samples(agent: Agent) -> dict[str, float]:
    _, text = http_get(agent.base + "/metrics")
    prefix = "runner_agent_pod_annotations_total{"
    return {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if line.startswith(prefix)
    }


async def _start(start_agent: Starter, config: dict[str, Any], env: dict[str, str]) -> Agent:
    # In threads: the stub answers from this loop, which must keep running meanwhile.
    agent = await asyncio.to_thread(start_agent.start, config, env=env)
    await asyncio.to_thread(
        agent.wait_for, lambda: agent.get("/readyz")[0] == 200, timeout=30, what="ready"
    )
    return agent


async def test_a_job_started_through_the_agent_is_on_its_pod_until_it_completes(
    start_agent: Starter, pod_api: ApiServer, pki: pki_.Pki
) -> None:
    token = start_agent.workdir / "token"
    token.write_text(pod_api.token + "\n")
    config = start_agent.base_config()
    config["kubernetes"] = {
        "api_url": pod_api.url,
        "token_file": str(token),
        "ca_file": str(pki.ca_file),
    }
    config["runner"] = {"shutdown_wait_seconds": 0}  # stop with the job open
    env = {
        "RUNNER_AGENT_KUBERNETES__ANNOTATE_POD": "true",
        "POD_NAME": pod_api.pod,
        "POD_NAMESPACE": pod_api.namespace,
    }
    agent = await _start(start_agent, config, env)

    status, events = await post_ndjson(agent, "/v1/jobs", job_start(workflow="CI"))
    assert status == 200, events
    job = events[0]
    expected = {
        f"{PREFIX}repository": "octo/repo",
        f"{PREFIX}workflow": "CI",
        f"{PREFIX}run-id": "17",
        f"{PREFIX}run-attempt": "1",
        f"{PREFIX}job": "build",
        f"{PREFIX}runner": "runner-1",
    }
    await eventually(lambda: pod_api.ours() == expected, timeout=10, what="the annotations")
    assert pod_api.seen[-1].authorization == f"Bearer {pod_api.token}"

    path = f"/v1/jobs/{job['id']}/complete"
    status, done = await call_json(
        agent, "POST", path, {"secret": job["secret"], "result": "succeeded"}
    )
    assert status == 200, done
    await eventually(lambda: pod_api.ours() == {}, timeout=10, what="the annotations removed")

    status, events = await post_ndjson(
        agent, "/v1/jobs", job_start(claim="d" * 40, run_id="18", workflow="CI")
    )
    assert status == 200, events
    await eventually(lambda: pod_api.ours(), timeout=10, what="the next job's annotations")
    samples = await asyncio.to_thread(_samples, agent)
    assert samples["ok"] >= 3.0
    assert samples["error"] == 0.0

    agent.signal(signal.SIGTERM)
    assert await asyncio.to_thread(agent.wait, 30) == 0
    assert pod_api.ours() == {}  # removed at stop, the job still open
    assert pod_api.annotations() == {"actions.github.com/patch-id": "0"}
    assert pod_api.token not in agent.logs()


async def test_enabled_outside_a_pod_the_agent_serves_and_says_why_once(
    start_agent: Starter,
) -> None:
    config = start_agent.base_config()
    config["kubernetes"] = {"annotate_pod": True}
    env = {"KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": ""}
    agent = await _start(start_agent, config, env)
    status, events = await post_ndjson(agent, "/v1/jobs", job_start())
    assert status == 200, events
    errors = [r for r in agent.log_records() if r["level"] == "error"]
    assert len(errors) == 1, errors
    message = errors[0]["message"]
    assert message.startswith("pod annotations are off: ")
    assert "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT" in message
    assert "kubernetes.api_url" in message
    assert await asyncio.to_thread(_samples, agent) == {"ok": 0.0, "error": 1.0}
