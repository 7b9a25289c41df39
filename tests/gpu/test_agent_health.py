"""GPU health through a real agent on the replay backend: XID 79 on this runner's GPU
takes it out of rotation (readiness, and the real job-started hook fails the job), an
unscoped GPU's XID or an application XID does not, and a restarted agent keeps the
verdict until ``runner-agent gpu clear``."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.hook.test_end_to_end import Pod
from tests.support.agentproc import Agent, Starter, http_get, run_cli

UUID0 = "GPU-f15a61ee-3ad4-c8f3-98c3-405fff35fc00"
UUID1 = "GPU-f15a61ee-3ad4-c8f3-98c3-405fff35fc01"


def start(start_agent: Starter, config: dict[str, Any] | None = None, **gpu: Any) -> Agent:
    config = config or start_agent.base_config()
    config["gpu"] = {"backend": "fake", **gpu}
    config["installer"] = {"system_packages": "host"}
    agent = start_agent.start(config)
    agent.wait_for(lambda: "gpu" in readyz(agent)[1], timeout=20, what="the gpu condition")
    return agent


def readyz(agent: Agent, query: str = "") -> tuple[int, dict[str, Any]]:
    status, body = http_get(agent.base + "/readyz" + query)
    return status, {c["name"]: c for c in json.loads(body)["conditions"]}


def gpu_cli(agent: Agent, *args: str) -> Any:
    return run_cli("gpu", *args, "--socket", str(agent.socket))


def test_xid_79_on_this_runners_gpu_fails_readiness_and_the_next_job(
    start_agent: Starter,
) -> None:
    agent = start(start_agent, fake={"gpus": 2, "xids": [{"at_seconds": 1, "gpu": 0, "xid": 79}]})
    agent.wait_for(lambda: readyz(agent)[0] == 503, timeout=20, what="readiness to fail")
    _, conditions = readyz(agent)
    message = conditions["gpu"]["message"]
    assert message.startswith(f"gpu 0 ({UUID0}) XID 79 at "), message
    assert readyz(agent, "?exclude=gpu")[0] == 200  # a startup probe is not wedged
    status, body = http_get(agent.base + "/readyz?exclude=GPU;rm")
    assert status == 400
    assert "is not a condition name" in json.loads(body)["error"]["message"]
    # The real wrappers, as the runner runs them: the job fails with the reason.
    pod = Pod(start_agent.workdir / "pod", agent)
    started = pod.hook("job-started.sh", NVIDIA_VISIBLE_DEVICES=UUID0)
    assert started.returncode != 0
    assert "XID 79" in started.stderr, started.stderr
    assert "gpu_unhealthy" in started.stderr or "unhealthy" in started.stderr
    shown = gpu_cli(agent)
    assert shown.returncode == 1
    assert "health: unhealthy" in shown.stdout
    assert "UNHEALTHY" in shown.stdout
    assert "backend: fake (ready): a replayed H200, not hardware" in shown.stdout
    assert "runs CUDA up to 13.0" in shown.stdout
    # A job whose runner sees only the other GPU starts.
    other = pod.hook("job-started.sh", NVIDIA_VISIBLE_DEVICES=UUID1)
    assert other.returncode == 0, other.stderr
    assert pod.hook("job-completed.sh").returncode == 0
    # The scope follows what the runner sees: GPU 0 is no longer this runner's.
    assert readyz(agent)[0] == 200
    metrics = http_get(agent.base + "/metrics")[1].decode()
    healthy = [
        line for line in metrics.splitlines() if line.startswith("runner_agent_gpu_healthy{")
    ]
    assert [line.endswith(" 0.0") for line in healthy] == [True, False]  # GPU 0, then 1
    assert f'uuid="{UUID0}"' in healthy[0]
    assert 'xid="79"} 1.0' in metrics


def test_an_unscoped_gpu_and_an_application_xid_leave_the_runner_ready(
    start_agent: Starter,
) -> None:
    xids = [{"at_seconds": 0.5, "gpu": 1, "xid": 79}, {"at_seconds": 0.5, "gpu": 0, "xid": 13}]
    agent = start(start_agent, devices=["0"], fake={"gpus": 2, "xids": xids})
    agent.wait_for(
        lambda: (
            'xid="13"} 1.0' in http_get(agent.base + "/metrics")[1].decode()
            and 'xid="79"} 1.0' in http_get(agent.base + "/metrics")[1].decode()
        ),
        timeout=20,
        what="both XIDs counted",
    )
    status, conditions = readyz(agent)
    assert status == 200, conditions
    assert conditions["gpu"]["message"] == "1 GPU(s) healthy"
    shown = json.loads(gpu_cli(agent, "--json").stdout)
    assert [(d["index"], d["in_scope"], d["healthy"]) for d in shown["devices"]] == [
        (0, True, True),
        (1, False, False),
    ]


def test_a_restarted_agent_keeps_the_verdict_until_an_admin_clears_it(
    start_agent: Starter,
) -> None:
    config = start_agent.base_config()
    agent = start(
        start_agent, dict(config), fake={"xids": [{"at_seconds": 0.5, "gpu": 0, "xid": 79}]}
    )
    agent.wait_for(lambda: readyz(agent)[0] == 503, timeout=20, what="the verdict")
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    # A liveness restart: the same pod-local state, no XID this time.
    again = start(start_agent, dict(config))
    status, conditions = readyz(again)
    assert status == 503
    assert "XID 79" in conditions["gpu"]["message"]
    state = Path(config["server"]["socket_path"]).parent / "gpu-health.json"
    assert state.exists()
    assert gpu_cli(again, "clear").returncode == 2  # a UUID, or --all: never by accident
    bad = gpu_cli(again, "clear", "GPU-not-a-gpu")
    assert bad.returncode == 1
    assert "has no verdict to clear" in bad.stderr or "not a GPU UUID" in bad.stderr
    cleared = gpu_cli(again, "clear", UUID0)
    assert cleared.returncode == 0, cleared.stderr
    assert f"cleared: gpu 0 ({UUID0}) XID 79" in cleared.stdout
    again.wait_for(lambda: readyz(again)[0] == 200, timeout=10, what="ready again")
    assert gpu_cli(again).returncode == 0


def test_a_jobs_gpu_energy_and_busy_seconds_are_in_its_completion(start_agent: Starter) -> None:
    # The replay is inside its matmul loop (~690 W, 99 %) for the whole job.
    agent = start(start_agent, fake={"gpus": 2, "trace": "load"}, slow_interval_seconds=60)
    pod = Pod(start_agent.workdir / "pod", agent)
    assert pod.hook("job-started.sh", NVIDIA_VISIBLE_DEVICES=UUID1).returncode == 0
    time.sleep(2.5)
    assert pod.hook("job-completed.sh").returncode == 0
    [done] = [
        r
        for r in agent.log_records()
        if r["message"].startswith("job ") and "completed" in r["message"]
    ]
    assert done["gpus"] == 1  # the runner saw one of the two
    assert 2.0 < done["gpu_busy_seconds"] < 4.0
    assert 1200 < done["gpu_energy_joules"] < 3200  # ~690 W for ~2.5-4 s
    metrics = http_get(agent.base + "/metrics")[1].decode()
    assert "runner_agent_job_gpu_energy_joules_count 1.0" in metrics
    assert "runner_agent_job_gpu_busy_seconds_count 1.0" in metrics


def test_a_host_mode_runner_is_drained_when_its_gpu_turns_unhealthy(
    start_agent: Starter, tmp_path: Path
) -> None:
    # A stand-in listener: the kernel names a process after its executable's file. Not
    # named Runner.Listener: a self-hosted runner running this suite must not be drained.
    listener = tmp_path / "ra-test-listen"
    shutil.copy("/bin/sleep", listener)
    proc = subprocess.Popen([str(listener), "60"])
    try:
        agent = start(
            start_agent,
            drain_runner=True,
            drain_process="ra-test-listen",
            fake={"xids": [{"at_seconds": 1, "gpu": 0, "xid": 79}]},
        )
        assert proc.wait(timeout=20) == -signal.SIGINT
        drained = [r for r in agent.log_records() if r["message"].startswith("drained the runner")]
        assert len(drained) == 1
        assert f"pid {proc.pid}" in drained[0]["message"]
        assert "XID 79" in drained[0]["message"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
