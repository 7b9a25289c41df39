"""The engine container's agent (role services) and the sidecar's jobs, both real agents.

The engine agent follows the sidecar's open jobs over its socket and holds its own stop
gate closed for each; it serves no feature, job or cache route and never touches a store.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import loading
from agent.services import upstream
from tests.services.conftest import Agents
from tests.services.test_agent import call, conditions, service, wait_for_the_gate, web
from tests.support.agentproc import Agent

JOB = {"runner_name": "r1", "run_id": "7", "job": "build", "repository": "octo/app"}


def _engine_config(agents: Agents, sidecar: Agent, **upstream_extra: Any) -> dict[str, Any]:
    config = agents.base_config(role="services")
    config["upstream"] = {"socket_path": str(sidecar.socket), "poll_seconds": 0.2}
    config["upstream"].update(upstream_extra)
    config["services"] = {
        "web": web(agents.workdir, stop={"gate": True, "gate_max_wait_seconds": 60})
    }
    return config


def _open_job(sidecar: Agent, token: str | None = None) -> dict[str, Any]:
    status, text = call(sidecar, "POST", "/v1/jobs", {**JOB, "claim": "c" * 40}, token=token)
    assert status == 200, text
    return json.loads(text.splitlines()[0])


def _gate(agent: Agent) -> dict[str, Any]:
    status, body = call(agent, "GET", "/v1/stop-gate")
    assert status == 200, body
    return body


def test_the_engine_holds_dockerd_for_the_sidecars_job(agents: Agents) -> None:
    sidecar = agents.start(agents.base_config())
    engine = agents.start(_engine_config(agents, sidecar))
    engine.wait_for(lambda: engine.get("/readyz")[0] == 200, what="engine ready")
    assert _gate(engine)["open"] is True

    job = _open_job(sidecar)
    engine.wait_for(lambda: not _gate(engine)["open"], what="the gate to close")
    holders = _gate(engine)["holders"]
    assert list(holders) == ["upstream"]
    assert "octo/app job build on r1" in holders["upstream"]

    engine.signal(signal.SIGTERM)
    wait_for_the_gate(engine)
    time.sleep(1.0)  # five polls: the engine keeps its service up while the job runs
    assert engine.proc.poll() is None
    assert service(engine, "web")["up"] is True

    status, _ = call(sidecar, "POST", f"/v1/jobs/{job['id']}/complete", {"secret": job["secret"]})
    assert status == 200
    assert engine.wait(timeout=20) == 0
    assert any("stop gate opened" in r["message"] for r in engine.log_records())


def test_an_unreachable_sidecar_keeps_the_last_answer(agents: Agents) -> None:
    sidecar = agents.start(agents.base_config())
    engine = agents.start(_engine_config(agents, sidecar))
    _open_job(sidecar)
    engine.wait_for(lambda: not _gate(engine)["open"], what="the gate to close")
    sidecar.signal(signal.SIGKILL)
    sidecar.wait()
    engine.wait_for(lambda: conditions(engine).get("upstream") is False, what="upstream down")
    _, ready = engine.get("/readyz")
    message = next(c["message"] for c in ready["conditions"] if c["name"] == "upstream")
    assert "cannot reach the agent at" in message
    assert "keeps the last answer (1 open job(s))" in message
    assert _gate(engine)["open"] is False  # the job may still run: dockerd stays
    # An operator's force lets go, and no poll takes the hold again while it is down.
    call(engine, "POST", "/v1/stop-gate", {"open": True, "force": True, "reason": "test"})
    time.sleep(0.5)
    assert _gate(engine)["open"] is True


def test_a_sidecar_with_a_job_token_needs_it(agents: Agents, tmp_path: Path) -> None:
    token = tmp_path / "job.token"
    token.write_text("s3cret-job-token\n")
    sidecar = agents.start(agents.base_config(job_token_file=str(token)))
    engine = agents.start(_engine_config(agents, sidecar))
    engine.wait_for(lambda: conditions(engine).get("upstream") is False, what="refused")
    _, ready = engine.get("/readyz")
    message = next(c["message"] for c in ready["conditions"] if c["name"] == "upstream")
    assert "refused the request (401)" in message
    assert "upstream.token_file" in message
    assert "s3cret" not in engine.logs()

    engine2 = agents.start(_engine_config(agents, sidecar, token_file=str(token)))
    engine2.wait_for(lambda: conditions(engine2).get("upstream") is True, what="answered")
    job = _open_job(sidecar, token="s3cret-job-token")
    engine2.wait_for(lambda: not _gate(engine2)["open"], what="the gate to close")
    assert "s3cret" not in engine2.logs()
    body = {"secret": job["secret"]}
    done = call(sidecar, "POST", f"/v1/jobs/{job['id']}/complete", body, token="s3cret-job-token")
    assert done[0] == 200
    engine2.wait_for(lambda: _gate(engine2)["open"], what="the gate to open")


def test_the_services_role_serves_services_only_and_touches_no_store(agents: Agents) -> None:
    config = agents.base_config(role="services")
    config["services"] = {"web": web(agents.workdir)}
    engine = agents.start(config)
    engine.wait_for(lambda: engine.get("/readyz")[0] == 200, what="ready")
    names = set(conditions(engine))
    assert "catalog" not in names
    assert "store" not in names
    for method, target in [
        ("GET", "/v1/features"),
        ("POST", "/v1/jobs"),
        ("POST", "/v1/ensure"),
        ("GET", "/v1/cache"),
    ]:
        status, _ = call(engine, method, target, {} if method == "POST" else None)
        assert status == 404, target
    assert call(engine, "GET", "/v1/services")[0] == 200
    assert call(engine, "GET", "/v1/status")[0] == 200
    _, doc = call(engine, "GET", "/openapi.json")
    assert sorted(doc["paths"]) == [
        "/openapi.json",
        "/v1/config",
        "/v1/reload",
        "/v1/services",
        "/v1/services/{name}/logs",
        "/v1/services/{name}/restart",
        "/v1/services/{name}/start",
        "/v1/services/{name}/stop",
        "/v1/status",
        "/v1/stop-gate",
    ]
    assert not Path(config["cache"]["root"]).exists()


def test_the_sidecar_serves_on_until_its_open_job_completes(agents: Agents) -> None:
    sidecar = agents.start(agents.base_config())
    job = _open_job(sidecar)
    sidecar.signal(signal.SIGTERM)
    sidecar.wait_for(
        lambda: any("API serves on until" in r["message"] for r in sidecar.log_records()),
        what="the jobs wait",
    )
    assert call(sidecar, "GET", "/v1/jobs/current")[1]["jobs"][0]["id"] == job["id"]
    status, _ = call(sidecar, "POST", f"/v1/jobs/{job['id']}/complete", {"secret": job["secret"]})
    assert status == 200
    assert sidecar.wait(timeout=20) == 0


def test_the_sidecars_wait_for_jobs_is_bounded(agents: Agents) -> None:
    config = agents.base_config()
    config["runner"] = {"shutdown_wait_seconds": 0.5}
    sidecar = agents.start(config)
    _open_job(sidecar)
    sidecar.signal(signal.SIGTERM)
    assert sidecar.wait(timeout=20) == 0
    assert any("still open after" in r["message"] for r in sidecar.log_records())


def test_the_services_role_installs_nothing() -> None:
    with pytest.raises(loading.ConfigError) as info:
        loading.load(
            None,
            environ={
                "RUNNER_AGENT_SERVER__ROLE": "services",
                "RUNNER_AGENT_FEATURES__PREINSTALL": '["node@20"]',
            },
        )
    assert "move the preinstall list to the sidecar agent" in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"not json", "the answer is not JSON"),
        (b"[]", 'the answer has no "jobs" list'),
        (b'{"jobs": {}}', 'the answer has no "jobs" list'),
        (b'{"jobs": [1]}', "a job in the answer is int, not an object"),
    ],
)
def test_a_bad_answer_is_named(raw: bytes, expected: str) -> None:
    with pytest.raises(upstream.UpstreamError, match=expected):
        upstream.parse_jobs(raw)


def test_an_answer_is_read_as_open_jobs() -> None:
    jobs = upstream.parse_jobs(
        json.dumps({"jobs": [{"runner_name": "r", "repository": "o/a", "job": "j"}]}).encode()
    )
    assert [j.describe() for j in jobs] == ["o/a job j on r"]
