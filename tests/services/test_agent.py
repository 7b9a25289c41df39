"""Services through the real daemon: readiness, API, CLI, metrics, reload, gate, shutdown."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import yaml

from agent.cli import client
from tests.services.conftest import Agents, fake
from tests.support.agentproc import Agent, run_cli


def web(workdir: Path, name: str = "web", **extra: Any) -> dict[str, Any]:
    sock = workdir / f"{name}.sock"
    return {
        "command": fake("httpd", workdir, str(sock)),
        "health": {
            "kind": "http",
            "socket": str(sock),
            "path": "/health",
            "expect_body": "OK",
            "interval_seconds": 0.5,
            "timeout_seconds": 0.5,
        },
        "restart": {"backoff_initial_seconds": 0.05},
        "stop": {"grace_seconds": 2},
        **extra,
    }


def call(agent: Agent, method: str, target: str, body: Any = None, token: str | None = None):  # type: ignore[no-untyped-def]
    raw = json.dumps(body).encode() if body is not None else None
    return client.request(agent.socket, method, target, token=token, body=raw)


def wait_for_the_gate(agent: Agent) -> None:
    """Until the shutdown waits at the stop gate ("... stay(s) up until it opens"), not
    merely until a job closed it (logged "stop gate closed" too)."""
    agent.wait_for(
        lambda: any(
            "stop gate closed" in r["message"] and "stay" in r["message"]
            for r in agent.log_records()
        ),
        what="the gate wait",
    )


def service(agent: Agent, name: str) -> dict[str, Any]:
    _, body = call(agent, "GET", "/v1/services")
    return next(s for s in body["services"] if s["name"] == name)


def conditions(agent: Agent) -> dict[str, bool]:
    _, body = agent.get("/readyz")
    return {c["name"]: c["ok"] for c in body["conditions"]}


def metrics(agent: Agent) -> str:
    from tests.support.agentproc import http_get

    return http_get(agent.base + "/metrics")[1].decode()


def test_readiness_waits_for_required_services_in_dependency_order(agents: Agents) -> None:
    workdir = agents.workdir
    config = agents.base_config()
    config["services"] = {
        "web": web(workdir),
        "app": {
            "command": fake("ignore_term", workdir),
            "depends_on": ["web"],
            "stop": {"grace_seconds": 0.5},
        },
        "optional": {
            "command": fake("crash", workdir),
            "required_for_ready": False,
            "restart": {"policy": "never"},
        },
    }
    agent = agents.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    assert conditions(agent)["services"] is True
    records = agent.log_records()
    running = [r["service"] for r in records if r.get("state") == "running"]
    assert running.index("web") < running.index("app")
    app = service(agent, "app")
    assert app["up"] is True
    assert app["pid"] > 0
    assert service(agent, "optional")["state"] == "failed"  # not required: still ready

    # The CLI lists them; a job token could not restart, the open socket (no tokens) can.
    listed = run_cli("services", "ls", "--socket", str(agent.socket))
    assert listed.returncode == 0, listed.stderr
    assert "web" in listed.stdout
    assert "running" in listed.stdout
    restarted = run_cli("services", "restart", "web", "--socket", str(agent.socket))
    assert restarted.returncode == 0, restarted.stderr
    agent.wait_for(lambda: service(agent, "web")["restarts"]["manual"] == 1, what="manual restart")
    agent.wait_for(lambda: service(agent, "web")["state"] == "running", what="web back")
    assert 'runner_agent_service_restarts_total{reason="manual",service="web"} 1.0' in metrics(
        agent
    )
    logs = run_cli("services", "logs", "web", "-n", "5", "--socket", str(agent.socket))
    assert logs.returncode == 0
    assert "GET /health" in logs.stdout
    unknown = run_cli("services", "restart", "nope", "--socket", str(agent.socket))
    assert unknown.returncode == 1
    assert "no service named 'nope'" in unknown.stderr

    # Shutdown: dependents first (app before web), nothing left (the fixture checks).
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    stopping = [r["service"] for r in agent.log_records() if r.get("state") == "stopping"]
    assert stopping[-2:] == ["app", "web"]


def test_admin_scope_guards_commands_and_metrics_follow_a_crash(agents: Agents) -> None:
    workdir = agents.workdir
    (workdir / "job.token").write_text("job-secret")
    (workdir / "admin.token").write_text("admin-secret")
    config = agents.base_config(
        job_token_file=str(workdir / "job.token"), admin_token_file=str(workdir / "admin.token")
    )
    config["services"] = {"web": web(workdir)}
    agent = agents.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    status, body = call(agent, "POST", "/v1/services/web/stop", token="job-secret")
    assert status == 403
    status, body = call(agent, "GET", "/v1/services", token="job-secret")
    assert status == 200
    pid = body["services"][0]["pid"]
    status, _ = call(agent, "GET", "/v1/services/web/logs?lines=0", token="job-secret")
    assert status == 400

    import os

    os.kill(pid, signal.SIGKILL)
    agent.wait_for(lambda: service_with(agent, "web", "admin-secret")["restarts"]["exit"] == 1)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready again")
    text = metrics(agent)
    assert 'runner_agent_service_restarts_total{reason="exit",service="web"} 1.0' in text
    assert 'runner_agent_service_last_exit_code{service="web"} -9.0' in text
    assert 'runner_agent_service_up{service="web"} 1.0' in text
    assert 'runner_agent_service_state{service="web",state="running"} 1.0' in text
    assert 'runner_agent_service_health_check_seconds{service="web"}' in text

    status, body = call(agent, "POST", "/v1/services/web/stop", token="admin-secret")
    assert status == 202
    agent.wait_for(lambda: service_with(agent, "web", "admin-secret")["state"] == "stopped")
    assert agent.get("/readyz")[0] == 503  # a required service is down
    assert 'runner_agent_service_up{service="web"} 0.0' in metrics(agent)
    status, _ = call(agent, "POST", "/v1/services/web/start", token="admin-secret")
    assert status == 202
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready after start")


def service_with(agent: Agent, name: str, token: str) -> dict[str, Any]:
    _, body = call(agent, "GET", "/v1/services", token=token)
    return next(s for s in body["services"] if s["name"] == name)


def test_reload_restarts_a_changed_service_and_retries_a_failed_one(agents: Agents) -> None:
    workdir = agents.workdir
    config = agents.base_config()
    config["services"] = {
        "web": web(workdir),
        "crash": {
            "command": fake("crash", workdir),
            "required_for_ready": False,
            "restart": {"backoff_initial_seconds": 0.01, "start_limit_burst": 2},
        },
    }
    agent = agents.start(config)
    agent.wait_for(lambda: service(agent, "crash")["state"] == "failed", what="crash failed")
    agent.wait_for(lambda: service(agent, "web")["state"] == "running", what="web running")
    web_pid = service(agent, "web")["pid"]

    assert agent.config is not None
    config["services"]["web"]["env"] = {"CHANGED": "1"}
    config["services"]["crash"]["restart"]["start_limit_burst"] = 3
    agent.config.write_text(yaml.safe_dump(config))
    agent.signal(signal.SIGHUP)
    agent.wait_for(
        lambda: service(agent, "web")["pid"] not in (None, web_pid), what="web respawned"
    )
    assert Path(f"/proc/{service(agent, 'web')['pid']}/environ").read_bytes().count(b"CHANGED=1")
    agent.wait_for(
        lambda: (
            service(agent, "crash")["restarts"]["exit"] >= 3
            and service(agent, "crash")["state"] == "failed"
        ),
        what="crash retried and failed again",
    )

    # Removing a service stops it.
    del config["services"]["crash"]
    agent.config.write_text(yaml.safe_dump(config))
    agent.signal(signal.SIGHUP)
    agent.wait_for(
        lambda: (
            "crash" not in {s["name"] for s in call(agent, "GET", "/v1/services")[1]["services"]}
        )
    )


def test_a_closed_stop_gate_holds_a_gated_service_until_it_opens(agents: Agents) -> None:
    workdir = agents.workdir
    config = agents.base_config()
    config["services"] = {
        "web": web(workdir, stop={"gate": True, "gate_max_wait_seconds": 60, "grace_seconds": 2})
    }
    agent = agents.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    status, body = call(agent, "POST", "/v1/stop-gate", {"open": False, "reason": "job 42 running"})
    assert status == 200
    assert body["open"] is False
    agent.signal(signal.SIGTERM)
    wait_for_the_gate(agent)
    # Held: still running, the API still answers, readiness is false (draining).
    assert service(agent, "web")["state"] == "running"
    assert agent.get("/readyz")[0] == 503
    status, _ = call(agent, "POST", "/v1/stop-gate", {"open": True, "reason": "job 42 done"})
    assert status == 200
    assert agent.wait() == 0
    assert any("stop gate opened (job 42 done)" in r["message"] for r in agent.log_records())


def test_the_stop_gate_gives_up_after_its_maximum_wait(agents: Agents) -> None:
    workdir = agents.workdir
    config = agents.base_config()
    config["services"] = {"web": web(workdir, stop={"gate": True, "gate_max_wait_seconds": 0.5})}
    agent = agents.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    call(agent, "POST", "/v1/stop-gate", {"open": False, "reason": "a job that never ends"})
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    assert any("still closed after" in r["message"] for r in agent.log_records())


def test_a_second_signal_kills_services_with_the_agent(agents: Agents) -> None:
    workdir = agents.workdir
    config = agents.base_config()
    config["services"] = {
        "stubborn": {"command": fake("ignore_term", workdir), "stop": {"grace_seconds": 30}}
    }
    agent = agents.start(config)
    agent.wait_for(lambda: service(agent, "stubborn")["state"] == "running", what="running")
    agent.signal(signal.SIGTERM)
    agent.wait_for(lambda: service_state_logged(agent, "stopping"), what="stopping")
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0  # the strays fixture checks the service died too


def service_state_logged(agent: Agent, state: str) -> bool:
    return any(r.get("state") == state for r in agent.log_records())


def test_a_planned_stop_is_info_and_reads_stopping_to_stopped(agents: Agents) -> None:
    # The service stops answering its check as soon as it is asked to stop, and takes a
    # moment to exit, as dockerd does: the checks that fail meanwhile are no fault.
    workdir = agents.workdir
    flag = workdir / "serving"
    script = (
        f'trap \'rm -f "{flag}"; sleep 1.5; exit 0\' TERM; touch "{flag}"; '
        "while :; do sleep 0.05; done"
    )
    config = agents.base_config()
    config["services"] = {
        "slow": {
            "command": ["sh", "-c", script],
            "health": {
                "kind": "exec",
                "command": ["test", "-f", str(flag)],
                "interval_seconds": 0.1,
                "timeout_seconds": 0.1,
                "failure_threshold": 5,
                # The first check can run before sh has touched the flag: a start period
                # keeps that miss from reading as a warning (it was flaky in CI).
                "start_period_seconds": 10,
            },
            "stop": {"grace_seconds": 5, "kill_group": False},
        }
    }
    agent = agents.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    status, _ = call(agent, "POST", "/v1/services/slow/stop")
    assert status == 202
    agent.wait_for(lambda: service(agent, "slow")["state"] == "stopped", timeout=15)
    records = [r for r in agent.log_records() if r.get("service") == "slow"]
    moves = [(r["previous"], r["state"]) for r in records if "previous" in r]
    assert moves[-2:] == [("running", "stopping"), ("stopping", "stopped")], moves
    exits = [r for r in records if r["message"] == "service slow exited 0"]
    assert [r["level"] for r in exits] == ["info"]
    assert not [r for r in records if r["level"] == "warning"], records


def test_a_gate_an_operator_closed_stays_closed_through_a_job(agents: Agents) -> None:
    agent = agents.start(agents.base_config())
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    status, _ = call(agent, "POST", "/v1/stop-gate", {"open": False, "reason": "maintenance"})
    assert status == 200
    job_body = {"runner_name": "r1", "run_id": "1", "job": "j", "claim": "q" * 40}
    status, text = call(agent, "POST", "/v1/jobs", job_body)
    assert status == 200, text
    job = json.loads(text.splitlines()[0])
    _, gate = call(agent, "GET", "/v1/stop-gate")
    assert gate["open"] is False
    assert "maintenance" in gate["reason"]
    assert job["id"] in gate["reason"]
    status, _ = call(agent, "POST", f"/v1/jobs/{job['id']}/complete", {"secret": job["secret"]})
    assert status == 200
    _, gate = call(agent, "GET", "/v1/stop-gate")
    # The job's end is not the operator's.
    assert (gate["open"], gate["holders"]) == (False, {"operator": "maintenance"})
    # A second job, then the operator lets go: the job's hold stays, until forced.
    status, text = call(agent, "POST", "/v1/jobs", {**job_body, "run_id": "2"})
    assert status == 200, text
    call(agent, "POST", "/v1/stop-gate", {"open": True, "reason": "done"})
    _, gate = call(agent, "GET", "/v1/stop-gate")
    assert gate["open"] is False
    assert list(gate["holders"]) == ["jobs"]
    call(agent, "POST", "/v1/stop-gate", {"open": True, "force": True, "reason": "now"})
    _, gate = call(agent, "GET", "/v1/stop-gate")
    assert (gate["open"], gate["holders"], gate["reason"]) == (True, {}, "now")


def test_no_job_opens_while_the_agent_drains(agents: Agents) -> None:
    config = agents.base_config()
    config["services"] = {
        "web": web(agents.workdir, stop={"gate": True, "gate_max_wait_seconds": 60})
    }
    agent = agents.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    first = {"runner_name": "r1", "run_id": "1", "job": "j", "claim": "q" * 40}
    status, text = call(agent, "POST", "/v1/jobs", first)
    job = json.loads(text.splitlines()[0])
    agent.signal(signal.SIGTERM)
    wait_for_the_gate(agent)
    status, refused = call(agent, "POST", "/v1/jobs", {**first, "runner_name": "r2"})
    assert status == 503
    assert refused["error"]["code"] == "stopping"
    status, _ = call(agent, "POST", f"/v1/jobs/{job['id']}/complete", {"secret": job["secret"]})
    assert status == 200
    assert agent.wait() == 0
