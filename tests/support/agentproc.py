"""Starting the real daemon as a subprocess on free ports, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ra-test-", dir="/tmp"))
    path.chmod(0o755)
    return path


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def http_get(url: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Agent:
    """One running agent process."""

    proc: subprocess.Popen[bytes]
    port: int
    socket: Path
    config: Path | None
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, Any]:
        status, body = http_get(self.base + path)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def metric(self, name: str) -> float | None:
        _, text = http_get(self.base + "/metrics")
        for line in text.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def wait_for(self, predicate: Any, *, timeout: float = 10.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = predicate()
            except OSError:  # not listening yet, or restarting its listener
                value = None
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.logs()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; log:\n{self.logs()}")


class Starter:
    """Starts agents in ``workdir`` and stops every one of them at teardown (by PID)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.agents: list[Agent] = []
        self._count = 0

    def write_config(self, data: dict[str, Any] | str, name: str = "config.yaml") -> Path:
        path = self.workdir / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return path

    def base_config(self, **server: Any) -> dict[str, Any]:
        self._count += 1
        return {
            "server": {
                "metrics_address": f"127.0.0.1:{free_port()}",
                "socket_path": str(self.workdir / f"api{self._count}.sock"),
                **server,
            },
            "logging": {"format": "json", "level": "debug"},
            # Never the machine's /var/lib/runner-agent: the store condition prepares it.
            "cache": {"root": str(self.workdir / f"store{self._count}")},
        }

    def start(
        self,
        config: dict[str, Any] | None = None,
        *,
        config_path: Path | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        wait_socket: bool = True,
        user: tuple[int, int] | None = None,
        port: int | None = None,
        socket_path: Path | None = None,
    ) -> Agent:
        if config_path is None and config is not None:
            config_path = self.write_config(config, name=f"config{len(self.agents)}.yaml")
        if config is not None:
            port = int(config["server"]["metrics_address"].rsplit(":", 1)[1])
            socket_path = Path(config["server"]["socket_path"])
        assert port is not None
        assert socket_path is not None
        log = self.workdir / f"agent{len(self.agents)}.log"
        argv = [PYTHON, "-m", "agent", "serve"]
        if config_path is not None:
            argv += ["--config", str(config_path)]
        argv += args or []
        if user is not None:
            argv = ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", *argv]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_AGENT_")} | (
            env or {}
        )
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env)
        agent = Agent(proc=proc, port=port, socket=socket_path, config=config_path, log=log)
        self.agents.append(agent)
        if wait_ready:
            agent.wait_for(lambda: _healthy(agent), timeout=20, what="/healthz")
            if wait_socket:
                agent.wait_for(agent.socket.exists, timeout=10, what="the API socket")
        return agent

    def stop_all(self) -> None:
        for agent in self.agents:
            if agent.proc.poll() is None:
                agent.proc.send_signal(signal.SIGKILL)
                agent.proc.wait(timeout=10)


def _healthy(agent: Agent) -> bool:
    try:
        status, _ = http_get(agent.base + "/healthz", timeout=1)
    except OSError:
        return False
    return status == 200


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``runner-agent ARGS`` as a real process, without the caller's RUNNER_AGENT_*."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_AGENT_")}
    return subprocess.run(
        [PYTHON, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=full_env | (env or {}),
    )
