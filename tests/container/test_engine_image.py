"""The engine image, built and run privileged: its supervised dockerd answers, survives a
``kill -9``, and the container holds nothing job code must not reach.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.conftest import Containers, Running, wait
from tests.support import docker, images

# The flags this machine's dockerd needs (no bridge, no iptables): the container's too.
API = "/var/lib/runner-agent-engine/api.sock"
NO_BRIDGE = '["--iptables=false", "--ip6tables=false", "--bridge=none"]'


def ping(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect(str(sock))
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        answer = s.recv(4096)
    return answer.startswith(b"HTTP/1.") and answer.endswith(b"OK")


@pytest.fixture
def sockets() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ra-engine-sock-") as folder:
        yield Path(folder)


def start_engine(run: Containers, built: images.Images, sockets: Path) -> Running:
    return run(
        built.engine_image(),
        *images.privileged(),
        "--network", "none",
        "-v", f"{sockets}:/run/docker",
        "-e", "RUNNER_AGENT_SERVICES__DOCKERD__PARAMS__SOCKET=/run/docker/docker.sock",
        "-e", f"RUNNER_AGENT_SERVICES__DOCKERD__PARAMS__EXTRA_ARGS={NO_BRIDGE}",
        # Alone here: no sidecar to follow.
        "-e", "RUNNER_AGENT_UPSTREAM__POLL_SECONDS=60",
    )  # fmt: skip


def api(engine: Running, path: str) -> tuple[int, Any]:
    """GET ``path`` from the engine agent's own socket, inside its container."""
    return engine.get(path, API)


def dockerd(engine: Running) -> dict[str, Any]:
    status, body = api(engine, "/v1/services")
    assert status == 200, body
    [found] = [s for s in body["services"] if s["name"] == "dockerd"]
    return found  # type: ignore[no-any-return]


def test_the_engine_runs_dockerd_and_recovers_it_from_kill_9(
    built: images.Images, engine: docker.Engine, run: Containers, sockets: Path
) -> None:
    box = start_engine(run, built, sockets)
    sock = sockets / "docker.sock"
    wait(lambda: sock.exists() and ping(sock), "dockerd's /_ping", box, timeout=90)
    first = dockerd(box)
    assert first["state"] == "running"
    assert first["up"] is True

    code, out = box.exec("sh", "-c", "kill -9 $(cat /var/run/docker.pid)")
    assert code == 0, out
    wait(
        lambda: (d := dockerd(box))["pid"] != first["pid"] and d["up"],
        "dockerd restarted",
        box,
        timeout=90,
    )
    again = dockerd(box)
    assert again["restarts"]["exit"] == 1
    assert "SIGKILL" in str(again["last_exit"])
    assert ping(sock)
    # tini is PID 1 and reaps what a killed dockerd leaves (its containerd shims).
    code, out = box.exec("cat", "/proc/1/comm")
    assert out.strip() == "tini"


def test_the_engine_holds_no_store_and_serves_no_job(
    built: images.Images, engine: docker.Engine, run: Containers, sockets: Path
) -> None:
    box = start_engine(run, built, sockets)
    wait(lambda: box.exec("test", "-S", API)[0] == 0, "the engine agent's API", box)
    _, body = api(box, "/v1/status")
    names = {c["name"] for c in body["conditions"]}
    assert "catalog" not in names
    assert "store" not in names
    # No feature, job or cache route: nothing here installs or touches a store.
    for path in ("/v1/features", "/v1/jobs/current", "/v1/cache"):
        assert api(box, path)[0] == 404, path
    config = built.inspect(built.engine_image())["Config"]
    assert isinstance(config, dict)
    assert set(config["Volumes"]) == {"/var/lib/docker"}
    code, _ = box.exec("test", "-e", "/var/lib/runner-agent/store")
    assert code == 1
    # No token or credential in its environment or its configuration.
    code, env = box.exec("env")
    names = {line.split("=", 1)[0].upper() for line in env.splitlines()}
    assert not [n for n in names if "TOKEN" in n or "SECRET" in n or "KEY" in n], names
    _, body = api(box, "/v1/config")
    settings = body["settings"]
    assert settings["server"]["role"] == "services"
    assert settings["server"]["admin_token_file"] is None
    assert settings["server"]["job_token_file"] is None
    assert settings["upstream"]["token_file"] is None
