"""The job hook as an UNPRIVILEGED runner user (uid 1001, gid 123, no other groups:
``setpriv``, since root ignores file modes), against a real agent running as root whose
socket group is the runner's gid and whose job token the runner can read. The store is
bind-mounted READ-ONLY inside each pod's tool cache, as in a runner pod.

- an unwritable GITHUB_ENV fails the started hook naming the file, and the job it
  opened is completed (nothing stays leased);
- a system feature (GNU hello, apt) left to a runner user without sudo fails with the
  one message that names the packages, the manager and the ways out;
- a job step cannot write the store through the tool cache view; it CAN replace its own
  pod's link, which changes nothing in the store, nor for another pod, and the next job
  on the pod puts the link back;
- ``pip install`` against the linked python falls back to a user install; ``npm i -g``
  against the linked node goes to the pod-local prefix, whose bin is on PATH; neither
  writes the store;
- one job cannot complete another runner's job nor ensure on its behalf, with its own
  secret or with the job token alone.

The python and node entries are the bundled features installed for real by the agent,
from a local stand-in of their upstreams (:mod:`tests.hook.localsources`): the tests run
offline. One agent serves the whole module (its entries are installed once).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hook import localsources, userpod
from tests.hook.userpod import GID, UID, Pod, api, as_user, snapshot
from tests.support import agentproc
from tests.support.server import Server

pytestmark = [
    pytest.mark.root,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("setpriv") is None,
        reason="runs the runner as uid 1001 with setpriv and bind-mounts the store: needs root",
    ),
]

REFUSED = ("Read-only file system", "Permission denied")


@dataclass
class Shared:
    """The module's agent, its store, its job token and the local upstream."""

    agent: agentproc.Agent
    store: Path
    token: str
    token_file: Path
    sources: localsources.Sources
    server: Server
    root: Path


def _job_token(root: Path) -> tuple[str, Path]:
    token = secrets.token_urlsafe(24)
    path = root / "job.token"
    path.write_text(token + "\n")
    os.chown(path, 0, GID)
    path.chmod(0o640)  # the agent's (root) and the runner group's, as a mounted secret
    return token, path


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the node entry is repacked from the node and npm on PATH: install them")
    root = agentproc.make_workdir()
    starter = agentproc.Starter(root)
    try:
        with Server() as server:
            sources = localsources.serve(server, root / "upstream")
            token, token_file = _job_token(root)
            config = starter.base_config(socket_group=GID, job_token_file=str(token_file))
            config["catalog"] = {"paths": [str(sources.catalog)]}
            config["installer"] = {"mirrors": sources.mirrors}
            config["runner"] = {"labels": ["self-hosted", sources.python_label, sources.node_label]}
            agent = starter.start(config, env={"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"})
            agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=30, what="ready")
            store = Path(config["cache"]["root"])
            yield Shared(agent, store, token, token_file, sources, server, root)
    finally:
        starter.stop_all()
        agentproc.remove_tree(root)


PodMaker = Callable[..., Pod]


@pytest.fixture
def pods(shared: Shared) -> Iterator[PodMaker]:
    """Makes pods on the module's agent, each with the store mounted read-only."""
    with contextlib.ExitStack() as stack:

        def make(name: str, *, uid: int = UID) -> Pod:
            runner = f"arc-{name}-{secrets.token_hex(3)}"
            pod = Pod(
                shared.root / "pods" / runner, shared.agent.socket, runner, uid=uid,
                RUNNER_AGENT_TOKEN_FILE=str(shared.token_file),
            )  # fmt: skip
            stack.enter_context(pod.store_mounted(shared.store))
            return pod

        yield make


def _jobs(shared: Shared) -> list[dict[str, Any]]:
    status, body = api(shared.agent.socket, "GET", "/v1/jobs/current", token=shared.token)
    assert status == 200, body
    jobs: list[dict[str, Any]] = body["jobs"]
    return jobs


def _open_for(shared: Shared, pod: Pod) -> list[dict[str, Any]]:
    return [j for j in _jobs(shared) if j["runner_name"] == pod.env["RUNNER_NAME"]]


def _start(pod: Pod) -> subprocess.CompletedProcess[str]:
    started = pod.hook("job-started.sh")
    assert started.returncode == 0, started.stdout + started.stderr
    return started


def _view_of(pod: Pod, tool: str) -> Path:
    """The tool cache link ``<tool cache>/<name>/<version>/<arch>`` the step's PATH uses."""
    where = pod.step(f"command -v {tool}").stdout.strip()
    assert where.startswith(f"{pod.tool_cache}/"), where
    link = Path(where).parents[1]
    assert link.is_symlink(), link
    return link


def test_an_unwritable_github_env_fails_the_hook_naming_it_and_completes_the_job(
    shared: Shared, pods: PodMaker
) -> None:
    pod = pods("env")
    env_file = Path(pod.env["GITHUB_ENV"])
    os.chown(env_file, 0, 0)
    env_file.chmod(0o644)  # the runner's user cannot write it
    started = pod.hook("job-started.sh")
    assert started.returncode == 2, started.stderr
    assert f"cannot write $GITHUB_ENV ({env_file}): Permission denied" in started.stderr
    assert _open_for(shared, pod) == []  # the hook completed the job it opened
    assert not pod.state.exists()
    assert env_file.read_text() == ""
    assert Path(pod.env["GITHUB_PATH"]).read_text() == ""  # nothing half-written


def _hello_installed() -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "hello"], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    return "install ok installed" in done.stdout


@pytest.fixture
def no_hello() -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("GNU hello through apt needs a Debian-like machine")
    if _hello_installed():  # another test left it: the runner would have it already
        subprocess.run(
            ["apt-get", "purge", "-y", "-qq", "hello"], capture_output=True, timeout=300,
            check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip


def test_a_system_feature_without_sudo_is_one_clear_message_and_no_open_job(
    start_agent: agentproc.Starter, no_hello: None
) -> None:
    config = start_agent.base_config(socket_group=GID)
    config["runner"] = {"labels": ["self-hosted", "feature:hello"]}
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=30, what="ready")
    pod = Pod(start_agent.workdir / "pod", agent.socket, "arc-nosudo")
    sudo = shutil.which("sudo", path=pod.env["PATH"])
    if (
        sudo is not None
        and subprocess.run(as_user(["sudo", "-n", "true"]), capture_output=True).returncode == 0
    ):
        pytest.skip(f"uid {UID} has passwordless sudo here: the no-sudo case cannot happen")
    started = pod.hook("job-started.sh")
    assert started.returncode == 1, started.stderr
    why = "the hook runs as a user without sudo" if sudo is None else "sudo -n refuses ("
    [line] = [x for x in started.stderr.splitlines() if "hello needs" in x]
    assert f"hello needs hello installed with apt, and {why}" in line
    assert line.endswith(
        "give the runner's user passwordless sudo, install them in the runner image, or "
        "run the agent in host mode"
    )
    status, body = api(agent.socket, "GET", "/v1/jobs/current")
    assert (status, body) == (200, {"jobs": []})
    assert not pod.state.exists()
    assert not _hello_installed()


WRITES = {
    "new file in an entry": "touch {entry}/bin/planted",
    "append to an entry's file": "echo planted >> {entry}/bin/python3",
    "remove an entry's file": "rm -f {entry}/bin/python3",
    "rename a tool": "mv {tool} {store}/gone",
    "new folder in the store": "mkdir {store}/planted",
    "chmod an entry": "chmod 777 {entry}",
}


def test_a_step_cannot_write_the_store_and_replacing_its_own_link_stays_pod_local(
    shared: Shared, pods: PodMaker
) -> None:
    pod = pods("write")
    _start(pod)
    link = _view_of(pod, "python3")
    entry = link.resolve()
    assert str(entry).startswith(f"{pod.store_view}/")  # through the read-only mount
    before = snapshot(shared.store)
    for what, command in WRITES.items():
        script = command.format(entry=link, tool=entry.parents[1], store=pod.store_view)
        proc = pod.step(script)
        assert proc.returncode != 0, what
        assert any(reason in proc.stderr for reason in REFUSED), (what, proc.stderr)
    assert snapshot(shared.store) == before

    # The link is the pod's own: the job may point it elsewhere (it only fools itself).
    fake = Path(pod.env["RUNNER_TEMP"]) / "fake"
    replaced = pod.step(
        f"mkdir -p {fake}/bin; printf '#!/bin/sh\\necho planted\\n' > {fake}/bin/python3; "
        f"chmod +x {fake}/bin/python3; ln -sfn {fake} {link}; python3 --version"
    )
    assert replaced.returncode == 0, replaced.stderr
    assert replaced.stdout.strip().endswith("planted")
    assert snapshot(shared.store) == before
    other = pods("other")
    _start(other)
    version = other.step("python3 --version")
    assert version.stdout.strip() == f"Python {shared.sources.python_version}"
    assert other.hook("job-completed.sh").returncode == 0

    # The next job on the pod puts its link back (a link of the runner's user is the
    # hook's to replace).
    assert pod.hook("job-completed.sh").returncode == 0
    _start(pod)
    assert not os.readlink(link).startswith("/")
    assert link.resolve() == entry
    again = pod.step("python3 --version")
    assert again.stdout.strip() == f"Python {shared.sources.python_version}"
    assert pod.hook("job-completed.sh").returncode == 0
    assert snapshot(shared.store) == before


def _user_pip_config(pod: Pod) -> dict[str, str]:
    """pip's configuration on this machine, for the runner's user: root's user file
    copied to its home (root's home is not readable to it) and the PIP_* variables."""
    for source in (Path.home() / ".config" / "pip" / "pip.conf", Path.home() / ".pip" / "pip.conf"):
        if source.is_file():
            dest = pod.home / ".config" / "pip" / "pip.conf"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, dest)
            userpod.chown_tree(pod.home, pod.uid)
            break
    proxies = ("http_proxy", "https_proxy", "no_proxy")
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith("PIP_") or k.lower() in proxies  # pip reaches its index as here
    }


def test_pip_install_against_the_linked_python_falls_back_to_a_user_install(
    shared: Shared, pods: PodMaker
) -> None:
    pod = pods("pip")
    _start(pod)
    link = _view_of(pod, "python3")
    before = snapshot(shared.store)
    pip = pod.step(
        "python3 -m pip install --no-warn-script-location six 2>&1; "
        "python3 -c 'import six, sys; print(six.__file__); print(sys.prefix)'",
        **_user_pip_config(pod),
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert "Defaulting to user installation because normal site-packages is not writeable" in (
        pip.stdout
    )
    assert "Successfully installed six" in pip.stdout
    where, prefix = pip.stdout.strip().splitlines()[-2:]
    assert where.startswith(f"{pod.home}/.local/lib/python"), where
    assert Path(prefix).resolve() == link.resolve()  # the linked python, not the host's
    assert snapshot(shared.store) == before
    assert pod.hook("job-completed.sh").returncode == 0


def test_npm_install_global_goes_to_the_pod_local_prefix_on_path(
    shared: Shared, pods: PodMaker
) -> None:
    pod = pods("npm")
    registry = localsources.npm_package(shared.server, "ra-perm-greet")
    (pod.home / ".npmrc").write_text(
        f"registry={registry}\naudit=false\nfund=false\nupdate-notifier=false\n"
    )
    userpod.chown_tree(pod.home, pod.uid)
    _start(pod)
    _view_of(pod, "node")
    prefix = pod.tool_cache / ".runner-agent-homes" / "node" / "npm_config_prefix"
    assert pod.step_env()["NPM_CONFIG_PREFIX"] == str(prefix)
    before = snapshot(shared.store)
    npm = pod.step("npm i -g ra-perm-greet >&2; command -v ra-perm-greet; ra-perm-greet")
    assert npm.returncode == 0, npm.stderr
    assert npm.stdout.splitlines() == [f"{prefix}/bin/ra-perm-greet", "ra-perm-greet 1.0.0"]
    assert (prefix / "lib" / "node_modules" / "ra-perm-greet" / "package.json").is_file()
    assert snapshot(shared.store) == before
    assert pod.hook("job-completed.sh").returncode == 0


def _leases_of(store: Path, job: str) -> list[Path]:
    folder = store / ".runner-agent" / "inuse"
    return [p for p in folder.glob("*.json") if json.loads(p.read_text()).get("job") == job]


def test_a_job_cannot_complete_or_ensure_for_another_runners_job(
    shared: Shared, pods: PodMaker
) -> None:
    mine = pods("mine")
    theirs = pods("theirs", uid=UID + 1)  # another runner, another user
    _start(mine)
    _start(theirs)
    [other] = _open_for(shared, theirs)
    assert mine.state.stat().st_mode & 0o777 == 0o600  # the secret is the runner user's
    assert mine.state.parent.stat().st_mode & 0o777 == 0o700
    assert _leases_of(shared.store, other["id"])
    proc = mine.run(
        ["python3", "-I", "-c", userpod.ATTACK, str(mine.state), str(theirs.state),
         str(shared.agent.socket), str(shared.token_file), theirs.env["RUNNER_NAME"]],
        dict(mine.env),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["read_other_state"] == "Permission denied"
    assert out["other"] == other["id"]
    for attempt in ("own_secret", "token_only", "ensure", "supersede"):
        status, body = out[attempt]
        assert status == 403, (attempt, body)
        assert body["error"]["code"] == "wrong_secret", (attempt, body)
    assert out["no_token"][0] == 401, out["no_token"]
    status, body = out["as_that_runner"]  # its runner is busy with the job
    assert (status, body["error"]["code"]) == (409, "runner_busy"), body
    assert _open_for(shared, theirs) == [other]
    assert _leases_of(shared.store, other["id"])

    done = theirs.hook("job-completed.sh")
    assert done.returncode == 0, done.stderr
    assert "released 1 lease(s)" in done.stderr
    assert _leases_of(shared.store, other["id"]) == []
    assert mine.hook("job-completed.sh").returncode == 0
    assert _open_for(shared, mine) == []
