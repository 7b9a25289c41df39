"""The dockerd preset with a real dockerd, supervised by the real agent.

Each test runs its own dockerd on private paths (socket, pid file, --data-root and
--exec-root under the test's scratch folder), so it never meets the machine's dockerd or
another test's; ``--iptables=false --ip6tables=false --bridge=none`` is how dockerd runs
on the development machine (no iptables in its kernel). Needs root and docker.io (which
``scripts/test`` installs); skipped with the reason elsewhere, never under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.services.conftest import Agents
from tests.services.test_agent import call, service, wait_for_the_gate
from tests.support.agentproc import Agent, http_get

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _needs_dockerd() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run dockerd")
    if shutil.which("dockerd") is None:
        pytest.skip("needs dockerd: apt-get install docker.io (scripts/test does it as root)")


def _supports_default_network_opt() -> bool:
    # dockerd 24+ has it (the dind images); Debian 12's 20.10 does not.
    helptext = subprocess.run(
        ["dockerd", "--help"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    return "--default-network-opt" in helptext


def dockerd_config(agents: Agents, **health: Any) -> dict[str, Any]:
    workdir = agents.workdir
    config = agents.base_config()
    config["services"] = {
        "dockerd": {
            "preset": "dockerd",
            "params": {
                "socket": str(workdir / "docker.sock"),
                "pidfile": str(workdir / "docker.pid"),
                "data_root": str(workdir / "data"),
                "exec_root": str(workdir / "exec"),
                "mtu": 1400,
                "mtu_default_network_opt": _supports_default_network_opt(),
                "extra_args": ["--iptables=false", "--ip6tables=false", "--bridge=none"],
            },
            "restart": {"backoff_initial_seconds": 0.2},
            **({"health": health} if health else {}),
        }
    }
    return config


def ping(sock: Path) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(sock))
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


def pings_ok(sock: Path) -> bool:
    try:
        answer = ping(sock)
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.") and b" 200 " in answer and answer.endswith(b"OK")


def ready(agent: Agent) -> bool:
    return agent.get("/readyz")[0] == 200


def test_dockerd_is_ready_when_it_answers_and_recovers_from_kill_9(agents: Agents) -> None:
    agent = agents.start(dockerd_config(agents))
    sock = agents.workdir / "docker.sock"
    agent.wait_for(lambda: ready(agent), timeout=60, what="ready")
    assert pings_ok(sock)
    first = service(agent, "dockerd")
    assert first["last_health"]["ok"] is True
    assert first["last_health"]["message"] == "HTTP 200 OK"
    argv = Path(f"/proc/{first['pid']}/cmdline").read_bytes().split(b"\0")
    assert f"--host=unix://{sock}".encode() in argv
    assert b"--group=123" in argv
    assert b"--mtu=1400" in argv

    os.kill(first["pid"], signal.SIGKILL)
    agent.wait_for(
        lambda: service(agent, "dockerd")["restarts"]["exit"] == 1, timeout=30, what="exit"
    )
    agent.wait_for(
        lambda: service(agent, "dockerd")["state"] == "running", timeout=60, what="running again"
    )
    assert pings_ok(sock)
    again = service(agent, "dockerd")
    assert again["pid"] != first["pid"]
    assert again["last_exit_code"] == -9
    text = http_get(agent.base + "/metrics")[1].decode()
    assert 'runner_agent_service_restarts_total{reason="exit",service="dockerd"} 1.0' in text
    assert 'runner_agent_service_up{service="dockerd"} 1.0' in text
    assert ready(agent)

    # A graceful stop leaves no dockerd or containerd of ours (the strays fixture).
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0
    assert not sock.exists() or not pings_ok(sock)


def test_a_stopped_dockerd_is_detected_as_hung_killed_and_restarted(agents: Agents) -> None:
    agent = agents.start(
        dockerd_config(agents, interval_seconds=0.5, timeout_seconds=0.5, failure_threshold=2)
    )
    sock = agents.workdir / "docker.sock"
    agent.wait_for(lambda: ready(agent), timeout=60, what="ready")
    pid = service(agent, "dockerd")["pid"]
    os.kill(pid, signal.SIGSTOP)  # alive, socket accepting, never answering
    agent.wait_for(lambda: not ready(agent), timeout=30, what="not ready while hung")
    agent.wait_for(
        lambda: service(agent, "dockerd")["restarts"]["unhealthy"] == 1,
        timeout=30,
        what="unhealthy restart",
    )
    agent.wait_for(lambda: ready(agent), timeout=60, what="ready again")
    assert pings_ok(sock)
    after = service(agent, "dockerd")
    assert after["pid"] != pid
    assert after["restarts"]["exit"] == 0
    text = http_get(agent.base + "/metrics")[1].decode()
    assert 'runner_agent_service_restarts_total{reason="unhealthy",service="dockerd"} 1.0' in text
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0


def test_stale_pid_file_and_socket_of_a_killed_dockerd_are_cleaned(agents: Agents) -> None:
    workdir = agents.workdir
    # What a SIGKILLed dockerd leaves: a pid file naming a dead pid, a dead socket.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (workdir / "docker.pid").write_text(str(dead.pid))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(workdir / "docker.sock"))
    stale.close()
    agent = agents.start(dockerd_config(agents))
    agent.wait_for(lambda: ready(agent), timeout=60, what="ready")
    removed = [r["message"] for r in agent.log_records() if "removed stale" in r["message"]]
    assert any("docker.pid" in m and "gone" in m for m in removed), removed
    assert any("docker.sock" in m and "refuses connections" in m for m in removed), removed
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0


def _open_job(agent: Agent) -> dict[str, Any]:
    # The stream comes back as text: the job event is its first line.
    status, text = call(
        agent,
        "POST",
        "/v1/jobs",
        {"runner_name": "r1", "run_id": "5", "job": "build", "claim": "k" * 40},
    )
    assert status == 200, text
    return json.loads(text.splitlines()[0])


def test_dockerd_outlives_a_running_job_until_it_completes(agents: Agents) -> None:
    agent = agents.start(dockerd_config(agents))
    sock = agents.workdir / "docker.sock"
    agent.wait_for(lambda: ready(agent), timeout=60, what="ready")
    job = _open_job(agent)
    agent.signal(signal.SIGTERM)
    wait_for_the_gate(agent)
    # The job runs on: dockerd answers, the API serves the job's completion.
    time.sleep(1.0)
    assert pings_ok(sock)
    assert service(agent, "dockerd")["state"] == "running"
    status, done = call(agent, "POST", f"/v1/jobs/{job['id']}/complete", {"secret": job["secret"]})
    assert status == 200, done
    assert agent.wait(timeout=60) == 0
    assert not pings_ok(sock)
    assert any("stop gate opened (no job is open)" in r["message"] for r in agent.log_records())


def test_dockerd_stops_at_the_gates_maximum_when_the_job_never_completes(
    agents: Agents,
) -> None:
    config = dockerd_config(agents)
    config["services"]["dockerd"]["stop"] = {"gate_max_wait_seconds": 2}
    agent = agents.start(config)
    sock = agents.workdir / "docker.sock"
    agent.wait_for(lambda: ready(agent), timeout=60, what="ready")
    _open_job(agent)
    started = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0
    assert time.monotonic() - started >= 2.0
    assert not pings_ok(sock)
    assert any("still closed after" in r["message"] for r in agent.log_records())
