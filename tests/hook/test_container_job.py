"""A container job with real dockerd: the job container gets the runner's mounts and
nothing else, and the job's tools resolve in it.

The layout is ARC's: the tool cache is ``_work/_tool`` inside the work folder, and the
store is mounted READ-ONLY inside the tool cache at ``.runner-agent-store`` (here a
read-only bind mount, in a pod a volume). The real job-started wrapper links each entry
relatively, so ``/__t/<tool>/<version>/<arch>`` resolves in the job container, whose
PATH the runner builds from $GITHUB_PATH without translating it: the hook's ``/__t``
lines are what make the tools findable there. The container is run the way the runner
runs it: ``-v <work>:/__w -v <tool cache>:/__t`` and ``PATH=<prepend>:<image PATH>``.
In it ``ninja --version`` and ``cmake --version`` run, cmake finds its modules through
its real path (a script that includes one), and a write into the store fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.hook import build
from tests.hook import runnerfiles
from tests.support import docker
from tests.support.agentproc import Starter

pytestmark = pytest.mark.root

WRAPPERS = Path(__file__).resolve().parents[2] / "agent" / "hook" / "wrappers"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.Engine]:
    with docker.engine_or_skip() as eng:
        yield eng


@contextlib.contextmanager
def read_only_bind(source: Path, target: Path) -> Iterator[None]:
    target.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True, timeout=30)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True, timeout=30)
        yield
    finally:
        subprocess.run(["umount", str(target)], check=True, timeout=30)


def run_wrapper(name: str, env: dict[str, str], *, timeout: float) -> str:
    """Run a hook wrapper as the runner does (``bash -e``, in the workspace); its log."""
    proc = subprocess.run(
        ["bash", "-e", str(WRAPPERS / name)],
        env=env, cwd=env["GITHUB_WORKSPACE"], capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def runner_env(work: Path, sock: Path, pyz: Path, home: Path) -> dict[str, str]:
    temp = work / "_temp"
    commands = temp / "_runner_file_commands"
    commands.mkdir(parents=True)
    env_file, path_file = commands / "set_env_1", commands / "add_path_1"
    env_file.write_text("")
    path_file.write_text("")
    (work / "repo" / "repo").mkdir(parents=True)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "RUNNER_AGENT_SOCKET": str(sock),
        "RUNNER_AGENT_HOOK_PYZ": str(pyz),
        "RUNNER_AGENT_HOOK_STATE": str(home / "hook-state.json"),
        "RUNNER_NAME": "arc-runner-abc12",
        "RUNNER_OS": "Linux",
        "RUNNER_ARCH": "X64",
        "RUNNER_TEMP": str(temp),
        "RUNNER_WORKSPACE": str(work / "repo"),
        "GITHUB_WORKSPACE": str(work / "repo" / "repo"),
        "GITHUB_REPOSITORY": "octo/repo",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_JOB": "container-build",
        "GITHUB_WORKFLOW": "CI",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_ENV": str(env_file),
        "GITHUB_PATH": str(path_file),
    }


@pytest.mark.timeout(600)
def test_a_container_job_runs_the_jobs_tools_and_cannot_write_the_store(
    start_agent: Starter, engine: docker.Engine
) -> None:
    image = docker.base_image(engine)
    root = start_agent.workdir
    store, work, home = root / "store", root / "_work", root / "home"
    home.mkdir()
    config = start_agent.base_config()
    config["cache"] = {"root": str(store)}
    config["runner"] = {"labels": ["self-hosted", "feature:ninja@1.13", "feature:cmake@3.31"]}
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=60, what="ready")
    pyz = build.build_zipapp(root / "hook")
    tool_cache = work / "_tool"  # ARC: no RUNNER_TOOL_CACHE, the tool cache is in _work
    env = runner_env(work, agent.socket, pyz, home)

    with read_only_bind(store, tool_cache / ".runner-agent-store"):
        log = run_wrapper("job-started.sh", env, timeout=500)
        assert "ninja" in log
        assert "cmake" in log

        # The links are relative, into the store inside the tool cache.
        [ninja_version] = [p.name for p in (tool_cache / "ninja").iterdir() if p.is_dir()]
        link = tool_cache / "ninja" / ninja_version / "x64"
        assert link.is_symlink()
        assert not os.readlink(link).startswith("/")
        assert (tool_cache / "ninja" / ninja_version / "x64.complete").is_file()

        path_lines = Path(env["GITHUB_PATH"]).read_text()
        assert "/__t/ninja/" in path_lines
        container_path = runnerfiles.path_after(path_lines, IMAGE_PATH)
        job_env = runnerfiles.parse_env(Path(env["GITHUB_ENV"]).read_text())
        (work / "find-module.cmake").write_text(
            "include(CMakePrintHelpers)\ncmake_print_variables(CMAKE_ROOT)\n"
        )
        script = (
            "set -e; ninja --version; cmake --version; cmake -P /__w/find-module.cmake; "
            "if touch /__t/.runner-agent-store/planted 2>/tmp/err; then echo WROTE; "
            "else cat /tmp/err; fi; "
            "if mkdir /__t/.runner-agent-store/ninja/evil 2>/tmp/err; then echo WROTE; "
            "else cat /tmp/err; fi"
        )
        env_args = [a for k, v in job_env.items() for a in ("-e", f"{k}={v}")]
        ran = engine.docker(
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            f"{work}:/__w",
            "-v",
            f"{tool_cache}:/__t",
            "-e",
            f"PATH={container_path}",
            *env_args,
            image,
            "sh",
            "-c",
            script,
            check=False,
            timeout=120,
        )
        out = ran.stdout.decode() + ran.stderr.decode()
        assert ran.returncode == 0, out
        lines = out.splitlines()
        assert lines[0].strip().startswith("1.13")
        assert lines[1].startswith("cmake version 3.31")
        assert "CMAKE_ROOT=" in out
        assert "/__t/.runner-agent-store/cmake/" in out  # found through its real path
        assert "WROTE" not in out
        assert out.count("Read-only file system") == 2
        assert not (store / "planted").exists()

        run_wrapper("job-completed.sh", env, timeout=120)
    status, current = agent_jobs(agent.socket)
    assert (status, current) == (200, {"jobs": []})


def agent_jobs(sock: Path) -> tuple[int, object]:
    from agent.cli import client

    status, body = client.request(sock, "GET", "/v1/jobs/current", token=None)
    return status, json.loads(json.dumps(body))
