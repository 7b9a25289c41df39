"""The agent configuration the chart renders is one the agent accepts: each
configuration's ConfigMap goes through the real `runner-agent config validate`, with the
files the chart mounts (tokens, GitHub secrets, the catalog ConfigMap's manifests) laid
out as the pod has them, below a temporary root instead of /etc/runner-agent."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts import support
from tests.github import stub

MOUNTED = "/etc/runner-agent/"


def lay_out(rendered: support.Rendered, config: str, root: Path) -> Path:
    """The pod's mounted files below root; returns the config file, its paths moved there."""
    tokens = rendered.one("Secret", "-tokens")["data"]
    (root / "tokens").mkdir()
    for key in ("job", "admin"):  # the chart's own random tokens
        (root / "tokens" / key).write_bytes(base64.b64decode(tokens[key]))
    (root / "github").mkdir()
    for name in ("github/token", "github/webhook-secret"):
        (root / name).write_text("not-a-real-secret\n")
    (root / "github" / "private-key").write_text("-----BEGIN PRIVATE KEY-----\n")
    for each in rendered.of("ConfigMap"):
        if each["metadata"]["name"].endswith("-catalog"):
            for key, manifest in each["data"].items():
                folder = root / "catalog" / key.removesuffix(".yaml")
                folder.mkdir(parents=True)
                (folder / "feature.yaml").write_text(manifest)
    path = root / "config.yaml"
    moved = config.replace(MOUNTED, f"{root}/").replace("/var/lib/runner-agent", f"{root}/var")
    path.write_text(moved)
    return path


@pytest.mark.parametrize("name", sorted(support.CONFIGURATIONS))
def test_the_rendered_configmap_passes_config_validate(name: str, tmp_path: Path) -> None:
    rendered = support.render(name)
    config = rendered.one("ConfigMap", "-config")["data"]["config.yaml"]
    path = lay_out(rendered, config, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "agent", "config", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    parsed = yaml.safe_load(config)
    assert parsed["server"]["metrics_address"] == "0.0.0.0:9102"
    assert parsed["server"]["admin_token_file"] == "/etc/runner-agent/tokens/admin"
    if name == "everything":
        assert parsed["github"]["private_key_file"] == "/etc/runner-agent/github/private-key"
        assert parsed["catalog"]["paths"] == ["/etc/runner-agent/catalog"]
        assert parsed["runner"]["labels"] == ["feature:node@20"]


def test_a_bad_setting_in_values_config_is_caught_by_validate(tmp_path: Path) -> None:
    text = support.render_text({"config": {"cache": {"size_budget": "lots"}}})
    config = yaml.safe_load(text["runner-agent/templates/config.yaml"])["data"]["config.yaml"]
    path = lay_out(support.render("defaults"), config, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "agent", "config", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 1
    assert "cache.size_budget" in done.stdout + done.stderr


# config.sh as the register container runs it: checks what it is given and writes the
# three files a registration leaves in the runner's root.
FAKE_CONFIG_SH = """#!/bin/bash
set -eu
[ "$1" = --unattended ] || { echo "config.sh: first argument $1" >&2; exit 9; }
printf '%s\\n' "$@" > args
touch .runner .credentials .credentials_rsaparams
"""


def as_user(container: dict[str, Any], argv: list[str]) -> list[str]:
    """argv under the container's rendered user and group, as its runtime starts it."""
    context = container["securityContext"]
    user, group = context["runAsUser"], context["runAsGroup"]
    return ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", *argv]


async def run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, f"{argv[-1][:200]}: rc={proc.returncode}\n{out.decode()}"
    return out.decode()


async def test_the_registration_init_containers_mint_and_register_as_rendered(
    needs_root: None, workdir: Path
) -> None:
    """The standalone runners' registration-token and register containers, their args,
    users and volumes as rendered (the App of "everything"): the token is minted from the
    GitHub stub's published answer into a memory emptyDir as the kubelet makes it (mode
    1777, sticky), config.sh (a stand-in: GitHub is not here) gets it, and the register
    container, another user, removes it afterwards."""
    rendered = support.render("everything")
    [runners] = rendered.of("StatefulSet")
    spec = runners["spec"]["template"]["spec"]
    init = {c["name"]: c for c in spec["initContainers"]}
    minting, register = init["registration-token"], init["register"]
    assert {m["name"] for m in minting["volumeMounts"]} == {"registration", "config", "github"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["registration"]["emptyDir"]["medium"] == "Memory"
    root = workdir / "pod"
    root.mkdir()
    config = rendered.one("ConfigMap", "-config")["data"]["config.yaml"]
    path = lay_out(rendered, config, root)
    for emptydir in ("registration", "runner-config"):
        (workdir / emptydir).mkdir()
        (workdir / emptydir).chmod(0o1777)
    home = workdir / "home-runner"  # the runner image's /home/runner, the runner's own
    home.mkdir()
    (home / "config.sh").write_text(FAKE_CONFIG_SH)
    (home / "config.sh").chmod(0o755)
    os.chown(home, register["securityContext"]["runAsUser"], 0)

    def moved(arg: str) -> str:
        return str(path) if arg.endswith("config.yaml") else arg.replace("/run/", f"{workdir}/")

    async with stub.serve(stub.Stub()) as github:
        github.app_id = str(yaml.safe_load(config)["github"]["app_id"])
        (root / "github" / "private-key").write_bytes(github.key_pem())
        argv = [sys.executable, "-m", "agent", *map(moved, minting["args"])]
        env = {"RUNNER_AGENT_GITHUB__API_URL": github.url}
        await run(as_user(minting, argv), env=env)
        assert github.requests["/orgs/octo/actions/runners/registration-token"] == 1
    published = stub.fixture("create-registration-token.json")["token"]
    token = workdir / "registration" / "token"
    assert token.read_text() == published + "\n"
    assert token.stat().st_mode & 0o777 == 0o640  # never readable by other users

    env = {e["name"]: e.get("value", "") for e in register["env"]}
    env["POD_NAME"] = "runner-agent-runner-0"
    [script] = register["args"]
    await run(as_user(register, [*register["command"], moved(script)]), cwd=home, env=env)
    args = (home / "args").read_text().splitlines()
    assert args[args.index("--token") + 1] == published
    assert args[args.index("--name") + 1] == "runner-agent-runner-0"
    assert args[args.index("--url") + 1] == env["RUNNER_URL"]
    assert not token.exists(), "the register container left the registration token behind"
    for name in (".runner", ".credentials", ".credentials_rsaparams"):
        assert (workdir / "runner-config" / name).is_file()
