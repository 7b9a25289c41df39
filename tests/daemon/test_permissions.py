"""File modes, run as an unprivileged user: root ignores file modes, so these use setpriv."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agentproc import Starter, free_port

UID, GID = 1001, 123
pytestmark = pytest.mark.usefixtures("needs_root")


def as_user(*argv: str) -> list[str]:
    return ["setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups", *argv]


def user_dir(base: Path, name: str) -> Path:
    path = base / name
    path.mkdir()
    os.chown(path, UID, GID)
    return path


def test_an_unreadable_config_exits_2_saying_permission_denied(start_agent: Starter) -> None:
    path = start_agent.write_config("logging:\n  level: info\n")
    path.chmod(0o600)  # root's, unreadable by the agent's user
    proc = subprocess.run(
        as_user(sys.executable, "-m", "agent", "serve", "--config", str(path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"runner-agent: invalid configuration: {path}: permission denied reading it; "
        f"make it readable by uid {UID}"
    )


def test_an_unreadable_config_degrades_and_refuses_the_api_with_the_reason(
    start_agent: Starter,
) -> None:
    run = user_dir(start_agent.workdir, "run")
    path = start_agent.write_config("logging:\n  level: info\n")
    path.chmod(0o600)
    port = free_port()
    agent = start_agent.start(
        config_path=path,
        args=["--on-config-error", "degrade"],
        env={
            "RUNNER_AGENT_SERVER__METRICS_ADDRESS": f"127.0.0.1:{port}",
            "RUNNER_AGENT_SOCKET": str(run / "api.sock"),
        },
        user=(UID, GID),
        port=port,
        socket_path=run / "api.sock",
    )
    _, body = agent.get("/readyz")
    config = {c["name"]: c for c in body["conditions"]}["config"]
    assert "permission denied" in config["message"]
    agent.wait_for(lambda: agent.socket.exists(), what="socket")
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(agent.socket))
    client.sendall(b"POST /v1/reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    answer = client.recv(4096)
    client.close()
    assert answer.startswith(b"HTTP/1.1 503")
    assert b'"code": "degraded"' in answer
    assert b"permission denied" in answer


def test_an_unreadable_token_file_is_a_config_error(start_agent: Starter) -> None:
    token = start_agent.workdir / "admin.token"
    token.write_text("s3cret")
    token.chmod(0o600)
    config = start_agent.base_config(admin_token_file=str(token))
    path = start_agent.write_config(config)
    proc = subprocess.run(
        as_user(sys.executable, "-m", "agent", "config", "validate", str(path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert f"{token}: server.admin_token_file: token file: permission denied" in proc.stderr
    assert "s3cret" not in proc.stderr + proc.stdout


CONNECT = (
    "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')"
)


def test_the_socket_refuses_users_outside_its_group(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    proc = subprocess.run(
        as_user(sys.executable, "-c", CONNECT, str(agent.socket)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
    assert "PermissionError" in proc.stderr


def test_socket_group_lets_the_runner_user_in(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config(socket_group=GID))
    assert agent.socket.stat().st_gid == GID
    proc = subprocess.run(
        as_user(sys.executable, "-m", "agent", "status", "--socket", str(agent.socket)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ready" in proc.stdout
