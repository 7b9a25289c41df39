"""The agent image, built and run: its user, probes, health check, contents and what
each install method may do in it.

The privilege table of the README says: as uid 10001 (the default) the agent installs
archives, pip and npm packages into the store but no script feature (the sandbox needs
root); run as root with the sandbox's capabilities (:data:`SANDBOX_CAPS`, what the
chart's sandboxed mode grants) it installs them too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.container.conftest import Containers, Running, wait
from tests.support import docker, images
from tests.support.agentproc import free_port, http_get

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "features" / "examples"
# What the script sandbox needs of root: a mount namespace and its mounts (SYS_ADMIN),
# the switch to its own uid (SETUID, SETGID, SETPCAP to drop the bounding set), the
# staging folder handed over and back (CHOWN, FOWNER, DAC_OVERRIDE), killing what it
# left (KILL), and loopback in a `network: none` namespace (NET_ADMIN).
SANDBOX_CAPS = (
    "SYS_ADMIN", "SETUID", "SETGID", "SETPCAP", "CHOWN", "FOWNER", "DAC_OVERRIDE", "KILL",
    "NET_ADMIN",
)  # fmt: skip


@pytest.fixture(scope="module")
def agent_image(built: images.Images) -> str:
    return built.agent()


def test_the_agent_runs_as_10001_and_serves_probes_and_metrics(
    engine: docker.Engine, agent_image: str, run: Containers
) -> None:
    port = free_port()
    agent = run(
        agent_image,
        "--network", "host",
        "-e", f"RUNNER_AGENT_SERVER__METRICS_ADDRESS=127.0.0.1:{port}",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait(lambda: http_get(base + "/readyz")[0] == 200, "/readyz", agent)
    status, body = http_get(base + "/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    _, metrics = http_get(base + "/metrics")
    assert b"runner_agent_cache_budget_bytes" in metrics
    assert b"runner_agent_http_requests_total" in metrics
    _, ready = http_get(base + "/readyz")
    messages = {c["name"]: c["message"] for c in json.loads(ready)["conditions"]}
    assert messages["api"] == "serving on /run/runner-agent/api.sock"
    assert messages["store"].startswith("/var/lib/runner-agent/store:")
    assert messages["config"].endswith("from /etc/runner-agent/config.yaml")

    code, out = agent.exec("id")
    expected = "uid=10001(runner-agent) gid=123(runner-agent) groups=123(runner-agent)"
    assert (code, out.strip()) == (0, expected)
    code, out = agent.exec("stat", "-c", "%u:%g %a", "/run/runner-agent/api.sock")
    assert (code, out.strip()) == (0, "10001:123 660")
    # The agent is the container's PID 1, and 10001's.
    code, out = agent.exec("stat", "-c", "%u", "/proc/1")
    assert out.strip() == "10001"


def test_the_image_is_what_it_says(built: images.Images, agent_image: str) -> None:
    config = built.inspect(agent_image)["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:123"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "runner-agent"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "/opt/runner-agent/healthcheck.py" in config["Healthcheck"]["Test"]
    assert set(config["Volumes"]) == {"/var/lib/runner-agent/store", "/run/runner-agent"}
    # No compiler, caches or package lists in the final stage; the venv's pip stays, for
    # the pip install method, and setuptools goes.
    done = built.engine.docker(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "sh", agent_image,
        "-c",
        "command -v gcc cc make; "
        "ls -d ~root/.cache /opt/runner-agent/lib/*/site-packages/setuptools; "
        "ls -A /var/lib/apt/lists; ls -A /var/cache/apt; python -m pip --version | cut -c1-4",
        check=False,
    )  # fmt: skip
    assert done.stdout.decode() == "pip \n", done.stdout.decode()
    assert done.stderr.decode().count("No such file or directory") == 2, done.stderr.decode()


def test_the_health_check_passes(engine: docker.Engine, agent_image: str, run: Containers) -> None:
    # On a metrics address of its own: the check follows the agent's setting.
    agent = run(
        agent_image, "--network", "none", "--health-interval", "1s",
        "-e", "RUNNER_AGENT_SERVER__METRICS_ADDRESS=0.0.0.0:9199",
    )  # fmt: skip

    def healthy() -> bool:
        out = engine.docker("inspect", "--format", "{{.State.Health.Status}}", agent.name).stdout
        return out.decode().strip() == "healthy"

    wait(healthy, "the HEALTHCHECK to pass", agent)


def _catalog_with_examples() -> list[str]:
    return [
        "-v", f"{EXAMPLES}:/etc/runner-agent/features:ro",
        "-e", 'RUNNER_AGENT_CATALOG__PATHS=["/etc/runner-agent/features"]',
    ]  # fmt: skip


def _ready(agent: Running) -> None:
    wait(lambda: agent.exec("runner-agent", "status")[0] == 0, "the agent's API", agent)


def test_a_script_feature_needs_the_sandboxed_mode(agent_image: str, run: Containers) -> None:
    agent = run(agent_image, "--network", "none", *_catalog_with_examples())
    _ready(agent)
    code, out = agent.exec("runner-agent", "ensure", "greeting@1.0.0")
    assert code == 1, out
    assert "needs the agent to run as root" in out
    assert "installer.script_isolation: none" in out
    code, _ = agent.exec("test", "-e", "/var/lib/runner-agent/store/greeting/1.0.0/x64")
    assert code == 1  # nothing half-installed is left


def test_a_script_feature_installs_as_root_with_the_sandboxs_capabilities(
    agent_image: str, run: Containers
) -> None:
    caps = [a for cap in SANDBOX_CAPS for a in ("--cap-add", cap)]
    agent = run(
        agent_image, "--network", "none", "--user", "0:123", "--cap-drop", "ALL", *caps,
        *_catalog_with_examples(),
    )  # fmt: skip
    _ready(agent)
    code, out = agent.exec("runner-agent", "ensure", "greeting@1.0.0")
    assert code == 0, out
    code, out = agent.exec("/var/lib/runner-agent/store/greeting/1.0.0/x64/bin/greeting")
    assert (code, out.strip()) == (0, "greeting 1.0.0: hello")
    # Handed back to the agent's user (root here) once the sandbox is gone.
    code, out = agent.exec(
        "stat", "-c", "%u", "/var/lib/runner-agent/store/greeting/1.0.0/x64/bin/greeting"
    )
    assert (code, out.strip()) == (0, "0")
