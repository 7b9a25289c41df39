"""The README's quick start as an ordinary user (uid 1001 through setpriv): a copy of the
checkout owned by that user, ``./scripts/run`` on the embedded defaults (its own venv,
built with the user's pip configuration), ``/readyz`` 200 on per-user paths, and one pip
ensure through the CLI, which finds the same socket."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.agentproc import free_port, http_get, make_workdir, remove_tree

UID, GID = 1001, 123
REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("needs_root")


def checkout_copy(dest: Path) -> None:
    """The working tree's tracked files (what a fresh clone has), owned by the user."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def user_environment(home: Path) -> dict[str, str]:
    """A login-like environment for the user: the client configuration pip reads here
    (its variables, and root's per-user pip.conf copied to the user's), nothing else."""
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    env |= {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    for conf in (Path.home() / ".config/pip/pip.conf", Path.home() / ".pip/pip.conf"):
        if conf.is_file():
            target = home / conf.relative_to(Path.home())
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(conf, target)
    return env


def as_user(argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups", *argv]


def test_the_quick_start_as_an_ordinary_user_gets_ready_and_installs() -> None:
    base = make_workdir()  # pytest's tmp_path is root's alone: uid 1001 cannot reach it
    agent: subprocess.Popen[bytes] | None = None
    try:
        src, home = base / "src", base / "home"
        src.mkdir()
        home.mkdir()
        checkout_copy(src)
        env = user_environment(home)
        for path in (src, home):
            subprocess.run(["chown", "-R", f"{UID}:{GID}", str(path)], check=True)
        port = free_port()
        env["RUNNER_AGENT_SERVER__METRICS_ADDRESS"] = f"127.0.0.1:{port}"  # not 9102: CI
        with (base / "agent.log").open("wb") as log:
            agent = subprocess.Popen(
                as_user(["./scripts/run"]), cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 240  # the first run builds its venv
        status = 0
        while time.monotonic() < deadline and agent.poll() is None:
            try:
                status, _ = http_get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.5)
        logged = (base / "agent.log").read_text(errors="replace")
        assert status == 200, logged[-4000:]
        socket_path = home / ".local/state/runner-agent/api.sock"
        assert socket_path.is_socket(), logged[-2000:]
        assert (socket_path.parent.stat().st_mode & 0o777) == 0o700
        assert str(socket_path) in logged

        ensure = subprocess.run(
            as_user([str(src / ".venv/bin/runner-agent"), "ensure", "feature:ninja"]),
            cwd=src, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert ensure.returncode == 0, ensure.stderr
        store = home / ".local/share/runner-agent/store"
        assert f"{store}/ninja/" in ensure.stdout
        ninja = next((store / "ninja").glob("*/x64/bin/ninja"))
        assert ninja.stat().st_uid == UID  # the user's own store, written by the agent
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(timeout=10)
        remove_tree(base)
