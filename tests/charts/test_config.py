"""The agent configuration the chart renders is one the agent accepts: each
configuration's ConfigMap goes through the real `runner-agent config validate`, with the
files the chart mounts (tokens, GitHub secrets, the catalog ConfigMap's manifests) laid
out as the pod has them, below a temporary root instead of /etc/runner-agent."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

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


async def test_the_registration_init_container_mints_with_the_rendered_config(
    tmp_path: Path,
) -> None:
    """The standalone runners' registration-token container, its args as rendered (the
    App of "everything"), against the GitHub stub with its published answer."""
    rendered = support.render("everything")
    [runners] = rendered.of("StatefulSet")
    init = {c["name"]: c for c in runners["spec"]["template"]["spec"]["initContainers"]}
    minting = init["registration-token"]
    assert {m["name"] for m in minting["volumeMounts"]} == {"registration", "config", "github"}
    config = rendered.one("ConfigMap", "-config")["data"]["config.yaml"]
    path = lay_out(rendered, config, tmp_path)
    async with stub.serve(stub.Stub()) as github:
        github.app_id = str(yaml.safe_load(config)["github"]["app_id"])
        (tmp_path / "github" / "private-key").write_bytes(github.key_pem())
        (tmp_path / "registration").mkdir()
        args = [
            str(path) if a.endswith("config.yaml") else a.replace("/run/", f"{tmp_path}/")
            for a in minting["args"]
        ]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "RUNNER_AGENT_GITHUB__API_URL": github.url},
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, out.decode() + err.decode()
        assert github.requests["/orgs/octo/actions/runners/registration-token"] == 1
    published = stub.fixture("create-registration-token.json")["token"]
    assert (tmp_path / "registration" / "token").read_text() == published + "\n"
