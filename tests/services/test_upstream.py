"""The engine container's agent (role services) and the sidecar's jobs, both real agents.

The engine agent follows the sidecar's open jobs over its socket and holds its own stop
gate closed for each; it serves no feature, job or cache route and never touches a store.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web as aioweb

from agent.config import loading
from agent.config.upstream import UpstreamSettings
from agent.services import upstream
from agent.services.gating import StopGate
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


def _open_job(sidecar: Agent, token: str | None = None, run_id: str = "7") -> dict[str, Any]:
    body = {**JOB, "run_id": run_id, "claim": run_id * 40}
    status, text = call(sidecar, "POST", "/v1/jobs", body, token=token)
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
    # Let go, so the teardown's SIGTERM does not wait for the gate.
    call(engine, "POST", "/v1/stop-gate", {"open": True, "force": True, "reason": "test"})


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


def test_a_pod_stop_ends_the_engine_when_the_job_ends(agents: Agents) -> None:
    # SIGTERM to both, as a pod's deletion sends: the sidecar serves on until its job
    # completes, then removes its socket and exits; the engine lets go at once.
    sidecar = agents.start(agents.base_config())
    engine = agents.start(_engine_config(agents, sidecar))
    job = _open_job(sidecar)
    engine.wait_for(lambda: not _gate(engine)["open"], what="the gate to close")
    sidecar.signal(signal.SIGTERM)
    engine.signal(signal.SIGTERM)
    wait_for_the_gate(engine)
    time.sleep(0.5)
    assert engine.proc.poll() is None
    status, _ = call(sidecar, "POST", f"/v1/jobs/{job['id']}/complete", {"secret": job["secret"]})
    assert status == 200
    started = time.monotonic()
    assert sidecar.wait(timeout=20) == 0
    assert engine.wait(timeout=20) == 0
    assert time.monotonic() - started < 30  # not the gate's 60 s
    assert not any("still closed after" in r["message"] for r in engine.log_records())


def test_an_operators_force_stands_until_the_upstream_jobs_change(agents: Agents) -> None:
    sidecar = agents.start(agents.base_config())
    engine = agents.start(_engine_config(agents, sidecar))
    job = _open_job(sidecar)
    engine.wait_for(lambda: not _gate(engine)["open"], what="the gate to close")
    call(engine, "POST", "/v1/stop-gate", {"open": True, "force": True, "reason": "ops"})
    time.sleep(2.0)  # ten polls at 0.2 s with the same answer
    assert _gate(engine)["open"] is True
    status, _ = call(sidecar, "POST", f"/v1/jobs/{job['id']}/complete", {"secret": job["secret"]})
    assert status == 200
    _open_job(sidecar, run_id="8")  # a new job: the hold comes back
    engine.wait_for(lambda: not _gate(engine)["open"], what="the gate to close again")
    call(engine, "POST", "/v1/stop-gate", {"open": True, "force": True, "reason": "end"})


class _Upstream:
    """A loopback server on a unix socket that answers GET /v1/jobs/current with
    ``body``, written in 8 KiB pieces."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def handle(self, request: aioweb.Request) -> aioweb.StreamResponse:
        response = aioweb.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(self.body), 8192):
            await response.write(self.body[start : start + 8192])
            await asyncio.sleep(0)
        await response.write_eof()
        return response


HELD = [upstream.OpenJob("1", "r", "o/a", "j")]


async def _poll(
    tmp_path: Path, body: bytes, token: bytes | None = None, held: bool = False
) -> tuple[Any, ...]:
    app = aioweb.Application()
    app.router.add_get("/v1/jobs/current", _Upstream(body).handle)
    runner = aioweb.AppRunner(app)
    await runner.setup()
    sock = tmp_path / "up.sock"
    await aioweb.UnixSite(runner, str(sock)).start()
    token_file = None
    if token is not None:
        token_file = tmp_path / "token"
        token_file.write_bytes(token)
    settings = UpstreamSettings(socket_path=sock, token_file=token_file, poll_seconds=0.5)
    states: list[tuple[bool, str]] = []
    follower = upstream.Follower(
        lambda: settings, lambda: None, lambda ok, m: states.append((ok, m))
    )
    if held:
        follower.jobs = list(HELD)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as s:
            await follower.poll(s)
    finally:
        await runner.cleanup()
    return follower.jobs, states[-1]


async def test_a_large_answer_in_pieces_is_read_whole(tmp_path: Path) -> None:
    jobs = [
        {"runner_name": f"r{i}", "repository": "o/a" + "x" * 150, "job": "j"} for i in range(900)
    ]
    body = json.dumps({"jobs": jobs}).encode()
    assert len(body) > 100_000
    found, (ok, _) = await _poll(tmp_path, body)
    assert ok
    assert len(found) == 900


@pytest.mark.parametrize(
    ("body", "token", "expected"),
    [
        (b"[" * 100_000 + b"]" * 100_000, None, "the answer is not JSON"),
        (json.dumps({"jobs": [{}] * 1025}).encode(), None, "lists 1025 jobs, more than 1024"),
        (b"x" * (upstream.MAX_ANSWER_BYTES + 10), None, "answered more than"),
        (b'{"jobs": []}', b"abc\ndef\n", "holds more than one printable line"),
    ],
)
async def test_a_bad_answer_or_token_keeps_the_last_answer(
    tmp_path: Path, body: bytes, token: bytes | None, expected: str
) -> None:
    found, (ok, message) = await _poll(tmp_path, body, token, held=True)
    assert found == HELD  # the hold stays
    assert not ok
    assert expected in message
    assert "abc" not in message


@pytest.mark.parametrize("answered", [True, False])
async def test_a_removed_socket_holds_nothing(tmp_path: Path, answered: bool) -> None:
    settings = UpstreamSettings(socket_path=tmp_path / "none.sock", poll_seconds=0.5)
    states: list[tuple[bool, str]] = []
    gate = StopGate()
    gate.close("held", holder=upstream.HOLDER)
    follower = upstream.Follower(
        lambda: settings, lambda: gate, lambda ok, m: states.append((ok, m))
    )
    follower.jobs, follower.answered = list(HELD), answered
    connector = aiohttp.UnixConnector(path=str(tmp_path / "none.sock"))
    async with aiohttp.ClientSession(connector=connector) as session:
        await follower.poll(session)
    assert follower.jobs == []
    assert gate.is_open
    ok, message = states[-1]
    assert "no socket at" in message
    # Before any answer, a missing socket is more likely a wrong path: not ready.
    assert ok is answered
    if not answered:
        assert "is upstream.socket_path right" in message
