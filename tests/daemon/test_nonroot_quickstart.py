"""The quick start as an ordinary user (uid 1001 through setpriv), on the defaults: the
agent picks per-user paths and turns ready, and the CLI finds its socket."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import yaml

from tests.support.agentproc import Starter, free_port

UID, GID = 1001, 123
pytestmark = pytest.mark.usefixtures("needs_root")


def test_an_ordinary_user_gets_a_ready_agent_and_a_working_ensure(start_agent: Starter) -> None:
    home = start_agent.workdir / "home"
    home.mkdir()
    os.chown(home, UID, GID)
    port = free_port()
    config = home / "agent.yaml"  # only the probe port: everything else is a default
    config.write_text(yaml.safe_dump({"server": {"metrics_address": f"127.0.0.1:{port}"}}))
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": ""}
    socket_path = home / ".local/state/runner-agent/api.sock"
    agent = start_agent.start(
        config_path=config, port=port, socket_path=socket_path, user=(UID, GID), env=env
    )
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=30, what="ready")
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
    assert socket_path.parent.stat().st_uid == UID
    logged = agent.logs()
    assert str(socket_path) in logged
    assert str(home / ".local/share/runner-agent/store") in logged

    # The CLI finds the same socket by the same rule. (An install is not tried here: this
    # machine's venv interpreter lives under /root, which uid 1001 cannot exec, so the
    # agent's spawned install worker could not start; a user's own checkout has its own.)
    status = subprocess.run(
        ["setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups",
         sys.executable, "-m", "agent", "status", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("RUNNER_AGENT_")}, **env},
    )  # fmt: skip
    assert status.returncode == 0, status.stderr + status.stdout
