"""End to end with GitHub: the real wrappers, run as the runner runs them, against a real
agent whose GitHub is the stub. The job gets exactly what its API labels and its team
config at the commit name (not the runner's menu), the hook's log says where each came
from, and a later step finds the tools on PATH."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from tests.github.stub import SHA, Stub, job
from tests.hook.test_end_to_end import Pod
from tests.support import fixtures
from tests.support.agentproc import Agent, Starter
from tests.support.server import Reply, Server

TOOLS = ("tool", "tool2", "menu-tool")


def _agent(start_agent: Starter, http_server: Server, stub: Stub, tmp_path: Path) -> Agent:
    for ident in TOOLS:
        body = fixtures.tar_gz(
            {f"bin/{ident}": (f"#!/bin/sh\necho {ident} 1.0.0\n".encode(), 0o755)}
        )
        fixtures.archive_catalog(start_agent.workdir / "catalog", ident, body)
        http_server.route(f"/x/{ident}-1.0.0.tar.gz", Reply(body=body))
    token = tmp_path / "github.token"
    token.write_text(stub.job_token + "\n")
    config = start_agent.base_config()
    config["catalog"] = {"paths": [str(start_agent.workdir / "catalog")]}
    config["cache"] = {"root": str(start_agent.workdir / "store")}
    # Host mode: the runner's tool cache view links the agent's store where it is (the
    # sidecar's read-only mount is the hook suite's concern).
    config["installer"] = {
        "mirrors": {"https://example.invalid/": http_server.url("/x/")},
        "system_packages": "host",
    }
    config["runner"] = {"labels": ["self-hosted", "feature:menu-tool"]}
    config["github"] = {"api_url": stub.url, "token_file": str(token)}
    running = start_agent.start(config)
    running.wait_for(lambda: running.get("/readyz")[0] == 200, timeout=30, what="ready")
    return running


async def test_the_hook_installs_what_the_labels_and_team_config_name(
    start_agent: Starter, http_server: Server, stub: Stub, tmp_path: Path
) -> None:
    agent = _agent(start_agent, http_server, stub, tmp_path)
    stub.jobs[("octo/repo", "4242", "1")] = [
        job("arc-runner-0", 1, ["self-hosted", "feature:menu-tool"]),
        job("arc-runner-e2e", 2, ["self-hosted", "feature:tool"]),
    ]
    stub.files[("octo/repo", SHA, ".github/runner-config.yml")] = "features:\n  - tool2\n"
    pod = Pod(start_agent.workdir / "pod", agent)

    def hook(wrapper: str) -> subprocess.CompletedProcess[str]:
        return pod.hook(wrapper, GITHUB_SHA=SHA)

    # In a thread: the stub answers from this test's loop.
    started = await asyncio.to_thread(hook, "job-started.sh")
    assert started.returncode == 0, started.stderr
    log = started.stderr
    assert "job labels: tool" in log, log
    assert "team config: tool2" in log, log
    assert "menu-tool" not in log
    step = await asyncio.to_thread(pod.step, "tool; tool2; command -v menu-tool || echo none")
    assert step.returncode == 0, step.stderr
    assert step.stdout.splitlines() == ["tool 1.0.0", "tool2 1.0.0", "none"]
    store = start_agent.workdir / "store"
    assert not (store / "menu-tool").exists()
    jobs = "/repos/octo/repo/actions/runs/4242/attempts/1/jobs"
    assert (
        stub.requests[jobs],
        stub.requests["/repos/octo/repo/contents/.github/runner-config.yml"],
    ) == (1, 1)
    completed = await asyncio.to_thread(hook, "job-completed.sh")
    assert completed.returncode == 0, completed.stderr
