"""The system steps left to the runner: nothing runs when the runner has the packages,
no sudo is one clear message, files land only in the manager's folders, and a signing
key is fetched with bounds."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.hook import system
from tests.support.server import Server, ok

ROOT = Path(__file__).resolve().parents[2]
KEY = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGfake\n-----END PGP PUBLIC KEY BLOCK-----\n"
MISSING = "runner-agent-test-no-such-package"


def install(packages: list[str]) -> dict[str, Any]:
    return {
        "action": "run", "argv": ["apt-get", "install", "-y", *packages],
        "env": {"DEBIAN_FRONTEND": "noninteractive"}, "purpose": "install", "manager": "apt",
        "packages": packages,
    }  # fmt: skip


def test_a_check_that_passes_already_installs_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    runner = system.Runner(said.append, euid=1001, environ={"PATH": str(tmp_path)})
    check = {"argv": ["/bin/sh", "-c", "echo hello 2.10"], "expect": "hello 2.10"}
    assert runner.run_feature("hello", [install(["hello"])], check) == "present"
    assert said == ["hello: already present in the runner (its check passes)"]


@pytest.mark.root
def test_no_sudo_is_one_message_naming_packages_manager_and_ways_out(
    needs_root: None, workdir: Path
) -> None:
    code = (
        "import sys, json; from agent.hook import system\n"
        "r = system.Runner(print, environ={'PATH': '/nonexistent'})\n"
        "try:\n"
        "    r.run_feature('hello', [json.loads(sys.argv[1])], None)\n"
        "except system.SystemStepError as exc:\n"
        "    print('ERROR', exc); sys.exit(exc.exit_code)\n"
    )
    proc = subprocess.run(
        ["setpriv", "--reuid=1001", "--regid=123", "--clear-groups", sys.executable, "-c", code,
         json.dumps(install([MISSING]))],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    [line] = [x for x in proc.stdout.splitlines() if x.startswith("ERROR")]
    assert line == (
        f"ERROR hello needs {MISSING} installed with apt, and the hook runs as a user "
        "without sudo: give the runner's user passwordless sudo, install them in the runner "
        "image, or run the agent in host mode"
    )


@pytest.mark.parametrize(
    "action",
    [
        {"action": "write_file", "path": "/etc/passwd", "content": "x"},
        {"action": "write_file", "path": "/etc/apt/sources.list.d/../../passwd", "content": "x"},
        {"action": "download", "url": "http://127.0.0.1:9/k", "dest": "/usr/bin/evil"},
    ],
)
def test_files_outside_the_managers_folders_are_refused(action: dict[str, Any]) -> None:
    runner = system.Runner(lambda text: None, euid=0)
    with pytest.raises(system.SystemStepError, match="outside apt's repository folders"):
        runner.run_feature("x", [action, install([MISSING])], None)


@pytest.mark.root
def test_a_key_is_fetched_and_installed_and_a_bad_one_refused(
    needs_root: None, http_server: Server
) -> None:
    dest = Path(f"/etc/apt/keyrings/runner-agent-test-{uuid.uuid4().hex[:8]}.asc")
    said: list[str] = []
    runner = system.Runner(said.append)
    try:
        action = {"action": "download", "url": http_server.route("/key.asc", ok(KEY)),
                  "dest": str(dest)}  # fmt: skip
        runner._download("x", "apt", action)
        assert dest.read_bytes() == KEY
        assert oct(dest.stat().st_mode & 0o777) == "0o644"
        http_server.route("/html", ok(b"<html>not a key</html>"))
        with pytest.raises(system.SystemStepError, match="is not an OpenPGP key"):
            runner._download("x", "apt", {**action, "url": http_server.url("/html")})
        http_server.route("/big", ok(KEY + b"x" * (2 << 20)))
        with pytest.raises(system.SystemStepError, match="over 1 MiB"):
            runner._download("x", "apt", {**action, "url": http_server.url("/big")})
    finally:
        dest.unlink(missing_ok=True)


def test_only_the_managers_own_binary_and_variables_run_as_root() -> None:
    from agent.hook import system as hook_system

    held = hook_system.Runner._held_to_manager
    held("hello", "apt", ["apt-get", "install", "-y", "hello"],
         {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "l"}, ("hello",))  # fmt: skip
    with pytest.raises(hook_system.SystemStepError, match="not apt's binary"):
        held("hello", "apt", ["/tmp/x/apt-get", "install", "hello"], {}, ("hello",))
    for name in ("APT_CONFIG", "PERL5OPT", "PATH", "LD_PRELOAD", "BASH_ENV"):
        with pytest.raises(hook_system.SystemStepError, match=name):
            held("hello", "apt", ["apt-get", "install", "hello"], {name: "x"}, ("hello",))
