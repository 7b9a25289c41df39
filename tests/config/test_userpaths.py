"""Per-user defaults when the agent is not root: the socket and the store follow XDG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import loading, userpaths
from tests.support.agentproc import make_workdir, remove_tree


def test_root_keeps_the_service_paths() -> None:
    assert userpaths.defaults({"HOME": "/home/u"}, euid=0) == {}


def test_without_root_the_runtime_dir_holds_the_socket(tmp_path: Path) -> None:
    env = {"HOME": "/home/u", "XDG_RUNTIME_DIR": str(tmp_path)}
    data = userpaths.defaults(env, euid=1001)
    assert data["server"]["socket_path"] == f"{tmp_path}/runner-agent/api.sock"
    assert data["cache"]["root"] == "/home/u/.local/share/runner-agent/store"


@pytest.mark.parametrize(
    ("env", "socket", "store"),
    [
        # su, cron and containers have no runtime dir: the state home, never /tmp.
        ({"HOME": "/home/u"}, "/home/u/.local/state/runner-agent/api.sock", None),
        ({"HOME": "/home/u", "XDG_RUNTIME_DIR": "/nonexistent"}, "/home/u/.local/state", None),
        (
            {"HOME": "/home/u", "XDG_STATE_HOME": "/s", "XDG_DATA_HOME": "/d"},
            "/s/runner-agent/api.sock",
            "/d/runner-agent/store",
        ),
        # Relative XDG values are ignored, as the XDG specification says.
        (
            {"HOME": "/home/u", "XDG_STATE_HOME": "rel", "XDG_DATA_HOME": "rel"},
            "/home/u/",
            "/home/u/",
        ),
    ],
)
def test_without_a_runtime_dir(env: dict[str, str], socket: str, store: str | None) -> None:
    data = userpaths.defaults(env, euid=1001)
    assert data["server"]["socket_path"].startswith(socket)
    assert not data["server"]["socket_path"].startswith("/tmp")
    if store:
        assert data["cache"]["root"].startswith(store)


def test_a_socket_path_over_the_kernel_limit_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    long = "/run/" + "x" * 120 + "/api.sock"
    path.write_text(f"server:\n  socket_path: {long}\n")
    with pytest.raises(loading.ConfigError) as caught:
        loading.load(path, environ={})
    [problem] = [str(p) for p in caught.value.problems]
    assert "server.socket_path" in problem
    assert "a unix socket path may have at most 107" in problem


def show_as_user(home: Path, *args: str, **env: str) -> dict[str, Any]:
    proc = subprocess.run(
        ["setpriv", "--reuid=1001", "--regid=123", "--clear-groups",
         sys.executable, "-m", "agent", "config", "show", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={"HOME": str(home), "PATH": os.environ["PATH"], **env},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(proc.stdout)
    assert isinstance(data, dict)
    return data


@pytest.mark.usefixtures("needs_root")
def test_an_ordinary_user_gets_per_user_paths_and_set_ones_win() -> None:
    base = make_workdir()  # pytest's tmp_path is root's alone: uid 1001 cannot reach it
    try:
        home = base / "home"
        home.mkdir()
        os.chown(home, 1001, 123)
        check_as_user(home)
    finally:
        remove_tree(base)


def check_as_user(home: Path) -> None:
    shown = show_as_user(home)
    assert shown["server"]["socket_path"] == f"{home}/.local/state/runner-agent/api.sock"
    assert shown["cache"]["root"] == f"{home}/.local/share/runner-agent/store"
    config = home / "agent.yaml"
    config.write_text("cache:\n  root: /srv/store\n")
    chosen = show_as_user(home, "--config", str(config), RUNNER_AGENT_SOCKET="/run/x.sock")
    assert chosen["cache"]["root"] == "/srv/store"
    assert chosen["server"]["socket_path"] == "/run/x.sock"


def test_a_uid_without_a_passwd_entry_and_no_home_gets_the_root_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kubernetes' runAsUser may name a uid the image lacks; HOME is / there, as runtimes do."""

    def unknown(uid: int) -> Any:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(userpaths.pwd, "getpwuid", unknown)
    assert userpaths.store_root({}) == Path("/.local/share/runner-agent/store")
    assert userpaths.store_root({"HOME": "/home/u"}) == Path(
        "/home/u/.local/share/runner-agent/store"
    )
