"""The chart's agent container, run in Docker as the chart sets it: its image, user and
group, args, env, securityContext (read-only root, no capabilities, no new privileges)
and every volume mount, with the rendered ConfigMap and the chart's token Secret laid out
as the kubelet would (files of group 123, the pod's fsGroup). Its three probes are then
asked from inside the container, on the port they name, as the kubelet asks them."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts import support
from tests.container.conftest import Containers, Running, wait
from tests.github import stub
from tests.support import images

FS_GROUP = 123

# The kubelet's httpGet, from inside the container's network namespace.
_PROBE = """
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open("http://127.0.0.1:" + sys.argv[1] + sys.argv[2], timeout=3) as r:
        print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
except OSError as e:  # not listening yet: what the kubelet counts as a failure
    print(0); print("{}")
"""


def chart_agent() -> dict[str, Any]:
    """The agent container of the GPU configuration's runner pod, as rendered."""
    spec = support.render("gpu").pod_specs()["runner-agent-runner"]
    [agent] = [c for c in spec["initContainers"] if c["name"] == "runner-agent"]
    return agent


def lay_out_volumes(agent: dict[str, Any], root: Path) -> list[str]:
    """docker run -v options for each mount, filled as the pod's volumes would be."""
    rendered = support.render("gpu")
    config = rendered.one("ConfigMap", "-config")["data"]
    tokens = rendered.one("Secret", "-tokens")["data"]
    options: list[str] = []
    for mount in agent["volumeMounts"]:
        host = root / mount["name"]
        host.mkdir()
        if mount["name"] == "config":
            for key, text in config.items():
                (host / key).write_text(text)
        elif mount["name"] == "tokens":
            for key, value in tokens.items():
                (host / key).write_bytes(base64.b64decode(value))
                os.chown(host / key, 0, FS_GROUP)
                (host / key).chmod(0o440)
        # fsGroup: the volume's root belongs to group 123, setgid, group-writable.
        os.chown(host, 0, FS_GROUP)
        host.chmod(0o2775 if not mount.get("readOnly") else 0o2755)
        suffix = ":ro" if mount.get("readOnly") else ""
        options += ["-v", f"{host}:{mount['mountPath']}{suffix}"]
    return options


def docker_options(agent: dict[str, Any]) -> list[str]:
    security = agent["securityContext"]
    options = [
        "--user", f"{security['runAsUser']}:{security['runAsGroup']}",
        "--group-add", str(FS_GROUP),
        "--network", "none",
    ]  # fmt: skip
    if security.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    for cap in security["capabilities"].get("drop", []):
        options += ["--cap-drop", cap]
    for env in agent["env"]:
        options += ["-e", f"{env['name']}={env['value']}"]
    return options


def probe(agent: Running, port: int, path: str) -> tuple[int, dict[str, Any]]:
    code, out = agent.exec("/opt/runner-agent/bin/python", "-I", "-c", _PROBE, str(port), path)
    assert code == 0, out
    status, _, body = out.partition("\n")
    return int(status), json.loads(body)


def test_the_chart_agent_container_runs_and_its_probes_answer(
    built: images.Images, run: Containers, tmp_path: Path
) -> None:
    spec = chart_agent()
    image = built.agent()
    assert spec["image"].rsplit("/", 1)[1].split(":")[0] == "runner-agent"
    agent = run(
        image,
        *docker_options(spec),
        *lay_out_volumes(spec, tmp_path),
        args=tuple(spec["args"]),
    )
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    startup = spec["startupProbe"]["httpGet"]
    port = ports[startup["port"]]
    wait(lambda: probe(agent, port, startup["path"])[0] == 200, "the startup probe", agent)
    for kind in ("readinessProbe", "livenessProbe"):
        get = spec[kind]["httpGet"]
        status, body = probe(agent, ports[get["port"]], get["path"])
        assert status == 200, (kind, body)
    _, ready = probe(agent, port, "/readyz")
    messages = {c["name"]: c["message"] for c in ready["conditions"]}
    # The chart's ConfigMap is the one in force, its tokens are read, the socket and the
    # store are the mounted volumes.
    assert messages["config"].endswith("from /etc/runner-agent/config/config.yaml")
    assert messages["api"] == "serving on /run/runner-agent/api.sock"
    assert messages["store"].startswith("/var/lib/runner-agent/store:")
    # The socket is group 123's, for the runner (uid 1001, group 123) to connect.
    code, out = agent.exec("stat", "-c", "%g %a", "/run/runner-agent/api.sock")
    assert (code, out.split()) == (0, ["123", "660"])
    code, out = agent.exec("id", "-u")
    assert out.strip() == "10001"


@pytest.mark.parametrize("bad", ["cache: [", "cache: {size_budget: lots}"])
def test_a_bad_configmap_degrades_and_the_probes_still_answer(
    built: images.Images, run: Containers, tmp_path: Path, bad: str
) -> None:
    spec = chart_agent()
    options = lay_out_volumes(spec, tmp_path)
    (tmp_path / "config" / "config.yaml").write_text(bad + "\n")
    agent = run(built.agent(), *docker_options(spec), *options, args=tuple(spec["args"]))
    port = {p["name"]: p["containerPort"] for p in spec["ports"]}["metrics"]
    wait(lambda: probe(agent, port, "/healthz")[0] == 200, "/healthz on a bad config", agent)
    status, body = probe(agent, port, "/readyz")
    assert status == 503
    config = next(c for c in body["conditions"] if c["name"] == "config")
    assert "config.yaml" in config["message"]
    # Still running: degrade never exits, so ARC never deletes the pod for it.
    code, _ = agent.exec("true")
    assert code == 0


async def test_the_registration_token_container_mints_in_its_image_as_its_user(
    built: images.Images, tmp_path: Path
) -> None:
    """The standalone runners' registration-token init container in the agent image, with
    its rendered user (the runner's uid, which the image has no passwd entry for), args,
    read-only root and mounts, against the GitHub stub (on the host's loopback)."""
    rendered = support.render("everything")
    [runners] = rendered.of("StatefulSet")
    init = {c["name"]: c for c in runners["spec"]["template"]["spec"]["initContainers"]}
    spec = init["registration-token"]
    security = spec["securityContext"]
    config = rendered.one("ConfigMap", "-config")["data"]
    image = built.agent()
    async with stub.serve(stub.Stub()) as github:
        github.app_id = str(yaml.safe_load(config["config.yaml"])["github"]["app_id"])
        options: list[str] = []
        for mount in spec["volumeMounts"]:
            host = tmp_path / mount["name"]
            host.mkdir()
            if mount["name"] == "config":
                for key, text in config.items():
                    (host / key).write_text(text)
            elif mount["name"] == "github":
                (host / "private-key").write_bytes(github.key_pem())
                os.chown(host / "private-key", 0, FS_GROUP)
                (host / "private-key").chmod(0o440)
            os.chown(host, 0, FS_GROUP)
            # The registration emptyDir as the kubelet makes a memory one: 1777.
            host.chmod(0o2755 if mount.get("readOnly") else 0o1777)
            suffix = ":ro" if mount.get("readOnly") else ""
            options += ["-v", f"{host}:{mount['mountPath']}{suffix}"]
        argv = [
            "run", "--rm", "--network", "host",
            "--user", f"{security['runAsUser']}:{security['runAsGroup']}",
            "--group-add", str(FS_GROUP), "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges",
            "-e", f"RUNNER_AGENT_GITHUB__API_URL={github.url}",
            *options, image, *spec["args"],
        ]  # fmt: skip
        done = await asyncio.to_thread(built.engine.docker, *argv, check=False, timeout=120)
        said = (done.stdout + done.stderr).decode(errors="replace")
        assert done.returncode == 0, said
        assert github.requests["/orgs/octo/actions/runners/registration-token"] == 1
    published = stub.fixture("create-registration-token.json")["token"]
    token = tmp_path / "registration" / "token"
    assert token.read_text() == published + "\n"
    assert published not in said
    assert token.stat().st_uid == security["runAsUser"]
