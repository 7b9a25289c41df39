"""End to end: the real wrappers run the way the runner runs them (``bash -e``, the
runner's variables, temporary GITHUB_ENV/GITHUB_PATH) against a real agent subprocess,
then a second shell applies those files as the runner does and finds the pip-installed
ninja and the apt-installed GNU hello on PATH.

- sidecar mode (``installer.system_packages: runner``, the default): the store is bind
  mounted READ-ONLY inside the tool cache, as in a runner pod; the agent leaves hello's
  apt steps to the runner, and the hook runs them as root; a write into the store through
  the view fails;
- host mode (``system_packages: host``): the agent installs hello itself, the runner sees
  the agent's store where the agent does;
- the agent killed mid-stream: the hook waits for the next agent on the same socket,
  posts again with the same claim, and finishes.

These install real packages (pip's index from pip's own configuration, apt's mirror from
apt's), so they need root and the network, and never run beside another apt user.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.hook import build, client
from tests.hook import runnerfiles
from tests.support.agentproc import Agent, Starter

pytestmark = [
    pytest.mark.root,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("apt-get") is None,
        reason="installs GNU hello with apt and mounts the store: needs root on Debian",
    ),
]

WRAPPERS = Path(__file__).resolve().parents[2] / "agent" / "hook" / "wrappers"
MENU = ["self-hosted", "linux", "feature:ninja@1.13", "feature:hello"]


def _remove_hello() -> None:
    subprocess.run(
        ["apt-get", "purge", "-y", "-qq", "hello"],
        capture_output=True, check=False, timeout=300,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )  # fmt: skip


@pytest.fixture
def no_hello() -> Iterator[None]:
    _remove_hello()
    yield
    _remove_hello()


def _agent(start_agent: Starter, **installer: Any) -> Agent:
    config = start_agent.base_config()
    config["runner"] = {"labels": MENU}
    config["installer"] = {"package_cache": str(start_agent.workdir / "packages"), **installer}
    running = start_agent.start(config)
    running.wait_for(lambda: running.get("/readyz")[0] == 200, timeout=30, what="ready")
    return running


def _current(agent: Agent) -> list[dict[str, Any]]:
    """GET /v1/jobs/current on the agent's API socket."""
    conn = client.UnixConnection(str(agent.socket), timeout=10)
    try:
        conn.request("GET", "/v1/jobs/current")
        jobs: list[dict[str, Any]] = json.loads(conn.getresponse().read())["jobs"]
    finally:
        conn.close()
    return jobs


class Pod:
    """The runner's side: its folders, the hook placed as an image places it, its env."""

    def __init__(self, root: Path, agent: Agent) -> None:
        self.root = root
        self.hooks = root / "hooks"
        self.hooks.mkdir(parents=True)
        for name in ("job-started.sh", "job-completed.sh"):
            shutil.copy(WRAPPERS / name, self.hooks / name)
        build.build_zipapp(self.hooks)
        self.work = root / "_work"
        self.tool_cache = self.work / "_tool"
        (self.work / "repo").mkdir(parents=True)
        (root / "temp").mkdir()
        self.env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "RUNNER_NAME": "arc-runner-e2e",
            "RUNNER_WORKSPACE": str(self.work / "repo"),
            "RUNNER_TEMP": str(root / "temp"),
            "GITHUB_RUN_ID": "4242",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_JOB": "build",
            "GITHUB_REPOSITORY": "octo/repo",
            "GITHUB_WORKFLOW": "CI",
            "GITHUB_EVENT_NAME": "push",
            "GITHUB_EVENT_PATH": str(root / "temp" / "event.json"),
            "GITHUB_WORKSPACE": str(self.work / "repo"),
            "GITHUB_ENV": str(root / "temp" / "set_env"),
            "GITHUB_PATH": str(root / "temp" / "add_path"),
            "RUNNER_AGENT_SOCKET": str(agent.socket),
            "RUNNER_AGENT_HOOK_WAIT": "60",
        }
        Path(self.env["GITHUB_EVENT_PATH"]).write_text('{"ref": "refs/heads/main"}')
        Path(self.env["GITHUB_ENV"]).touch()
        Path(self.env["GITHUB_PATH"]).touch()

    def hook(self, wrapper: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["bash", "-e", str(self.hooks / wrapper), *args],
            env={**self.env, **extra}, cwd=self.work / "repo", capture_output=True, text=True,
            timeout=540, check=False,
        )  # fmt: skip
        print(proc.stderr)
        return proc

    def step(self, script: str) -> subprocess.CompletedProcess[str]:
        """A later step of the job: the runner's files applied to the runner's env."""
        env = runnerfiles.apply(
            Path(self.env["GITHUB_ENV"]), Path(self.env["GITHUB_PATH"]), dict(self.env)
        )
        return subprocess.run(
            ["bash", "-e", "-c", script], env=env, cwd=self.work / "repo",
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip


def _expect_tools(pod: Pod) -> None:
    proc = pod.step("ninja --version; hello --version | head -1; command -v ninja")
    assert proc.returncode == 0, proc.stderr
    ninja, hello, where = proc.stdout.splitlines()
    assert ninja.startswith("1.13.")
    assert hello.startswith("hello (GNU Hello) ")
    assert where.startswith(f"{pod.tool_cache}/ninja/")
    assert where.endswith("/x64/bin/ninja")


def test_sidecar_mode_the_runner_installs_hello_and_links_ninja_read_only(
    start_agent: Starter, no_hello: None, tool_cache_module: Path
) -> None:
    agent = _agent(start_agent)
    pod = Pod(start_agent.workdir / "pod", agent)
    store = start_agent.workdir / "store1"
    mount = pod.tool_cache / ".runner-agent-store"
    mount.mkdir(parents=True)
    store.mkdir(exist_ok=True)
    subprocess.run(["mount", "--bind", str(store), str(mount)], check=True, timeout=30)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True, timeout=30)
        started = pod.hook("job-started.sh")
        assert started.returncode == 0, started.stderr
        assert "hello: installing hello with apt" in started.stderr
        _expect_tools(pod)
        link = next((pod.tool_cache / "ninja").glob("*/x64"))
        assert os.readlink(link).startswith("../../.runner-agent-store/ninja/")
        assert (link.parent / "x64.complete").is_file()
        script = tool_cache_module / "find-e2e.mjs"
        script.write_text(
            "import * as tc from '@actions/tool-cache';\n"
            "console.log(tc.find('ninja', '1.13', 'x64'));\n"
        )
        found = subprocess.run(
            ["node", str(script)], cwd=tool_cache_module, capture_output=True, text=True,
            env={**os.environ, "RUNNER_TOOL_CACHE": str(pod.tool_cache),
                 "RUNNER_TEMP": pod.env["RUNNER_TEMP"]},
            timeout=60, check=True,
        )  # fmt: skip
        assert found.stdout.strip().splitlines()[-1] == str(link)
        proc = pod.step(f"touch {link}/bin/planted")
        assert proc.returncode != 0
        assert "Read-only file system" in proc.stderr
        [job] = _current(agent)
        assert job["runner_name"] == "arc-runner-e2e"
        completed = pod.hook("job-completed.sh")
        assert completed.returncode == 0, completed.stderr
        assert _current(agent) == []
    finally:
        subprocess.run(["umount", str(mount)], check=False, timeout=30)


def test_host_mode_the_agent_installs_hello_and_the_view_links_its_store(
    start_agent: Starter, no_hello: None
) -> None:
    agent = _agent(start_agent, system_packages="host")
    pod = Pod(start_agent.workdir / "pod", agent)
    started = pod.hook("job-started.sh")
    assert started.returncode == 0, started.stderr
    assert "hello: installing" not in started.stderr  # the agent did it
    _expect_tools(pod)
    link = next((pod.tool_cache / "ninja").glob("*/x64"))
    assert os.readlink(link).startswith(str(start_agent.workdir))
    # An explicit step after checkout: the wrapper's ensure, with the team file.
    shutil.copy(WRAPPERS / "runner-agent-hook", pod.hooks / "runner-agent-hook")
    team = pod.work / "repo" / ".github" / "runner-config.yml"
    team.parent.mkdir()
    team.write_text("features:\n  - ninja@1.13  # the same entry: a hit\n")
    ensured = pod.hook("runner-agent-hook", "ensure", "feature:ninja@1.13")
    assert ensured.returncode == 0, ensured.stderr
    assert "ninja    1.13." in ensured.stderr
    assert "hit" in ensured.stderr
    _expect_tools(pod)
    assert pod.hook("job-completed.sh").returncode == 0


def test_the_agent_dying_mid_stream_is_waited_for_and_asked_again(
    start_agent: Starter, no_hello: None
) -> None:
    agent = _agent(start_agent, system_packages="host")
    pod = Pod(start_agent.workdir / "pod", agent)
    proc = subprocess.Popen(
        ["bash", "-e", str(pod.hooks / "job-started.sh")],
        env=pod.env, cwd=pod.work / "repo", stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("runner-agent: plan:"):
            agent.signal(signal.SIGKILL)
            agent.wait()
            break
    time.sleep(1.0)  # the hook finds no agent for a moment
    again = start_agent.start(config_path=agent.config, port=agent.port, socket_path=agent.socket)
    again.wait_for(lambda: again.get("/readyz")[0] == 200, timeout=30, what="ready")
    rest = proc.stderr.read()
    proc.stderr.close()
    code = proc.wait(timeout=540)
    output = "".join(lines) + rest
    print(output)
    assert code == 0, output
    assert "broke off the stream" in output
    _expect_tools(pod)
    assert pod.hook("job-completed.sh").returncode == 0


def test_a_leftover_job_is_superseded_and_an_unknown_feature_says_what_is_available(
    start_agent: Starter,
) -> None:
    config = start_agent.base_config()
    config["runner"] = {"labels": ["self-hosted", "feature:ninja@1.13"]}
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=30, what="ready")
    pod = Pod(start_agent.workdir / "pod", agent)
    first = pod.hook("job-started.sh")
    assert first.returncode == 0, first.stderr
    [old] = _current(agent)
    # The runner was killed: no completed hook. Its next job supersedes the leftover one
    # with the secret the state file kept, through the real agent.
    second = pod.hook("job-started.sh", GITHUB_RUN_ID="4243")
    assert second.returncode == 0, second.stderr
    assert f"({old['id']}) never completed" in second.stderr
    [new] = _current(agent)
    assert (new["id"] != old["id"], new["run_id"]) == (True, "4243")
    # An explicit step asking for what the catalog lacks: the label, and what there is.
    shutil.copy(WRAPPERS / "runner-agent-hook", pod.hooks / "runner-agent-hook")
    unknown = pod.hook("runner-agent-hook", "ensure", "feature:nosuchtool@1")
    assert unknown.returncode == 1, unknown.stderr
    assert "unknown feature 'nosuchtool'" in unknown.stderr
    assert "available: " in unknown.stderr
    assert "ninja" in unknown.stderr.split("available: ", 1)[1]
    assert pod.hook("job-completed.sh").returncode == 0
    assert _current(agent) == []
