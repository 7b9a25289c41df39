"""``container/compose.yaml``: accepted by compose v1 and v2, and brought up for real.

- v1 is Debian's docker-compose 1.29 (``config -q``); v2 validates files against the
  Compose Specification's JSON schema (compose-go), copied here from
  compose-spec/compose-spec ``schema/compose-spec.json`` at a08f8d5 (draft-07).
- The stack runs on this machine's images with host networking (no bridge here) through
  an override file, which also gives the engine privileged's capabilities less the one
  this machine lacks (:func:`tests.support.images.privileged`). Then a job runs: the hook
  in the runner container asks the agent for pip's ``ninja``, the runner's files are
  applied, ``ninja --version`` runs in the runner, and again in a container job started
  through the engine with the runner's mounts; job code cannot write the store; the
  engine's stop gate is held while the job is open.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.container.conftest import Running, wait
from tests.hook import runnerfiles
from tests.support import docker, images
from tests.support.agentproc import free_port, http_get

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "container" / "compose.yaml"
SCHEMA = Path(__file__).resolve().parent / "compose-spec.json"
ENGINE_API = "/var/lib/runner-agent-engine/api.sock"
WORK = "/home/runner/_work"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def compose_v1(*args: str, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_compose_v1_accepts_the_file() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_AGENT_")}
    compose_v1("config", "-q", env=env)
    services = compose_v1("--profile", "prometheus", "config", "--services", env=env).split()
    assert sorted(services) == ["agent", "engine", "prometheus", "runner"]


def test_compose_v2s_schema_accepts_the_file() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load(COMPOSE.read_text()))
    # Not vacuous: a misspelt key is refused.
    bad = yaml.safe_load(COMPOSE.read_text())
    bad["services"]["agent"]["volume"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(bad)


def test_only_the_agent_writes_the_store_and_holds_the_socket_folder() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["agent"]["user"] == "10001:123"
    assert "store:/var/lib/runner-agent/store" in services["agent"]["volumes"]
    for name in ("runner", "engine"):
        [store] = [v for v in services[name]["volumes"] if isinstance(v, dict)]
        assert (store["source"], store["read_only"]) == ("store", True)
        assert store["target"] == f"{WORK}/_tool/.runner-agent-store"
    assert services["engine"]["privileged"] is True
    assert "privileged" not in services["agent"]
    assert "privileged" not in services["runner"]
    # The engine holds no token file and no credential.
    engine_env = " ".join(services["engine"]["environment"]).upper()
    assert "TOKEN" not in engine_env
    assert "SECRET" not in engine_env


class Stack:
    """The compose project of one test, torn down (with its volumes) at the end."""

    def __init__(self, engine: docker.Engine, workdir: Path) -> None:
        self.engine = engine
        self.project = f"ratest{os.getpid()}"
        self.override = workdir / "override.yaml"
        self.agent_port = free_port()
        self.engine_port = free_port()
        self.env: dict[str, str] = {}

    def compose(self, *args: str, timeout: float = 300, input_: str | None = None) -> str:
        done = subprocess.run(
            ["docker-compose", "-p", self.project, "-f", str(COMPOSE), "-f", str(self.override),
             *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
            input=input_,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def container(self, service: str) -> Running:
        return Running(self.engine, self.compose("ps", "-q", service).strip())


def _override(privileged: list[str]) -> dict[str, Any]:
    engine: dict[str, Any] = {"network_mode": "host"}
    if privileged != ["--privileged"]:
        # privileged: true cannot start here (see tests.support.images.privileged).
        drops = [privileged[i + 1] for i, a in enumerate(privileged) if a == "--cap-drop"]
        engine |= {
            "privileged": False,
            "cap_add": ["ALL"],
            "cap_drop": drops,
            "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
            "volumes": ["/sys/fs/cgroup:/sys/fs/cgroup"],
        }
    return {
        "version": "3.8",
        "services": {
            "agent": {"network_mode": "host"},
            "runner": {"network_mode": "host"},
            "engine": engine,
        },
    }


@pytest.fixture
def stack(built: images.Images, engine: docker.Engine, tmp_path: Path) -> Iterator[Stack]:
    agent, engine_image, runner = built.agent(), built.engine_image(), built.runner()
    up = Stack(engine, tmp_path)
    up.override.write_text(yaml.safe_dump(_override(images.privileged())))
    up.env = {
        **{k: v for k, v in engine.env.items() if not k.startswith("RUNNER_AGENT_")},
        "RUNNER_AGENT_IMAGE": agent,
        "RUNNER_AGENT_ENGINE_IMAGE": engine_image,
        "RUNNER_AGENT_RUNNER_IMAGE": runner,
        "RUNNER_AGENT_SERVER__METRICS_ADDRESS": f"127.0.0.1:{up.agent_port}",
        "RUNNER_AGENT_ENGINE_METRICS_ADDRESS": f"127.0.0.1:{up.engine_port}",
        "RUNNER_AGENT_SERVICES__DOCKERD__PARAMS__EXTRA_ARGS": (
            '["--iptables=false", "--ip6tables=false", "--bridge=none"]'
        ),
        # The machine's CA bundle (images.Images copies it into container/certs/), and
        # its pip index where its pip names one: through the agent's own settings.
        "RUNNER_AGENT_INSTALLER__CA_BUNDLE": "/etc/runner-agent/certs/test-machine-ca.crt",
        "RUNNER_AGENT_RUNNER__LABELS": '["feature:ninja"]',
    }
    index = images.pip_index()
    if index:
        up.env["RUNNER_AGENT_INSTALLER__PIP_INDEX_URL"] = index
    try:
        up.compose("up", "-d", timeout=600)
        yield up
    finally:
        subprocess.run(
            ["docker-compose", "-p", up.project, "-f", str(COMPOSE), "-f", str(up.override),
             "down", "-v", "--timeout", "20"],
            env=up.env, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
    # The teardown leaves no container and no volume of the stack behind.
    containers = engine.docker("ps", "-a", "--format", "{{.Names}}").stdout.decode()
    volumes = engine.docker("volume", "ls", "--format", "{{.Name}}").stdout.decode()
    assert up.project not in containers
    assert up.project not in volumes


JOB_ENV = {
    "RUNNER_NAME": "compose-runner",
    "RUNNER_OS": "Linux",
    "RUNNER_ARCH": "X64",
    "RUNNER_TEMP": f"{WORK}/_temp",
    "RUNNER_TOOL_CACHE": f"{WORK}/_tool",
    "RUNNER_WORKSPACE": f"{WORK}/repo",
    "GITHUB_WORKSPACE": f"{WORK}/repo/repo",
    "GITHUB_REPOSITORY": "octo/repo",
    "GITHUB_RUN_ID": "77",
    "GITHUB_RUN_ATTEMPT": "1",
    "GITHUB_JOB": "compose",
    "GITHUB_WORKFLOW": "CI",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_ENV": f"{WORK}/_temp/_runner_file_commands/set_env_1",
    "GITHUB_PATH": f"{WORK}/_temp/_runner_file_commands/add_path_1",
}


def hook(runner: Running, wrapper: str) -> str:
    env = [a for k, v in JOB_ENV.items() for a in ("-e", f"{k}={v}")]
    done = runner.engine.docker(
        "exec", "-w", JOB_ENV["GITHUB_WORKSPACE"], *env, runner.name,
        "bash", "-e", f"/opt/runner-agent/hook/{wrapper}",
        check=False, timeout=600,
    )  # fmt: skip
    out = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, out
    return out


def test_the_stack_runs_a_job_and_a_container_job(stack: Stack, built: images.Images) -> None:
    agent, runner, engine = (stack.container(s) for s in ("agent", "runner", "engine"))
    base = f"http://127.0.0.1:{stack.agent_port}"
    wait(lambda: http_get(base + "/readyz")[0] == 200, "the agent ready", agent, timeout=120)
    engine_base = f"http://127.0.0.1:{stack.engine_port}"
    wait(lambda: http_get(engine_base + "/readyz")[0] == 200, "the engine", engine, timeout=120)
    _, metrics = http_get(base + "/metrics")
    assert b"runner_agent_cache_budget_bytes" in metrics

    code, out = runner.exec(
        "bash", "-c",
        f"mkdir -p {WORK}/_temp/_runner_file_commands {WORK}/repo/repo && "
        f": > {JOB_ENV['GITHUB_ENV']} && : > {JOB_ENV['GITHUB_PATH']}",
    )  # fmt: skip
    assert code == 0, out
    log = hook(runner, "job-started.sh")
    assert "ninja" in log

    # The engine follows the sidecar's open job: its dockerd would outlive the job.
    wait(
        lambda: not engine.get("/v1/stop-gate", ENGINE_API)[1]["open"],
        "the engine's gate to close",
        engine,
        timeout=10,
    )
    _, gate = engine.get("/v1/stop-gate", ENGINE_API)
    assert "octo/repo job compose on compose-runner" in gate["holders"]["upstream"]

    _, path_text = runner.exec("cat", JOB_ENV["GITHUB_PATH"])
    _, env_text = runner.exec("cat", JOB_ENV["GITHUB_ENV"])
    job_env = runnerfiles.parse_env(env_text)
    # Both forms of each line, as the runner applies them (the /__t ones resolve in
    # container jobs, where the runner's own do not).
    runner_path = runnerfiles.path_after(path_text, IMAGE_PATH)
    code, out = runner.exec("env", f"PATH={runner_path}", "ninja", "--version")
    assert code == 0, out
    version = out.strip()
    assert version.startswith("1.")

    # A container job, through the engine's dockerd, with only the runner's mounts.
    saved = subprocess.run(
        ["docker", "save", built.base], env=built.engine.env, capture_output=True,
        timeout=300, check=True,
    ).stdout  # fmt: skip
    loaded = built.engine.docker(
        "exec", "-i", engine.name, "docker", "load", "-q", input_=saved, timeout=300
    )
    assert b"Loaded image" in loaded.stdout
    container_path = runnerfiles.path_after(path_text, IMAGE_PATH)
    env_args = [a for k, v in job_env.items() for a in ("-e", f"{k}={v}")]
    code, out = engine.exec(
        "docker", "run", "--rm", "--network", "none",
        "-v", f"{WORK}:/__w", "-v", f"{WORK}/_tool:/__t", "-e", f"PATH={container_path}",
        *env_args, built.base, "sh", "-c",
        "ninja --version; if touch /__t/.runner-agent-store/planted 2>/tmp/e; then echo WROTE; "
        "else cat /tmp/e; fi",
    )  # fmt: skip
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == version
    assert "Read-only file system" in lines[1]

    # Job code in the runner cannot write the store either.
    code, out = runner.exec(
        "bash", "-c", f"touch {WORK}/_tool/.runner-agent-store/planted; "
        f"mkdir {WORK}/_tool/.runner-agent-store/ninja/evil",
    )  # fmt: skip
    assert code != 0
    assert out.count("Read-only file system") == 2, out
    code, _ = agent.exec("test", "-e", "/var/lib/runner-agent/store/planted")
    assert code == 1

    # The socket's group is not the admin scope: the agent made a token of its own.
    code, out = runner.exec(
        "python3", "-I", "-c",
        "import socket; s = socket.socket(socket.AF_UNIX); "
        "s.connect('/run/runner-agent/api.sock'); "
        "s.sendall(b'POST /v1/cache/gc HTTP/1.0\\r\\nHost: a\\r\\n'"
        "          b'Content-Length: 2\\r\\n\\r\\n{}'); "
        "print(s.recv(100).split()[1].decode())",
    )  # fmt: skip
    assert (code, out.strip()) == (0, "401"), out
    code, out = runner.exec("rm", "-f", "/run/runner-agent/api.sock")
    assert code != 0
    assert "Read-only file system" in out

    hook(runner, "job-completed.sh")
    wait(
        lambda: engine.get("/v1/stop-gate", ENGINE_API)[1]["open"],
        "the engine's gate to open",
        engine,
        timeout=10,
    )
    _, jobs = agent.get("/v1/jobs/current", "/run/runner-agent/api.sock")
    assert jobs == {"jobs": []}
