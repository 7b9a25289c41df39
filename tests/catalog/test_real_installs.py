"""Bundled features installed for real by a running agent, from the real registries
(through pip's, npm's and apt's own configuration), each then checked as a job runs it.

- pip and npm features: the small ones, from the configured package index and registry;
- system features that Debian ships: installed with apt as root, and every package the
  install added is purged afterwards (the machine is left as it was).

Under ``CI=true`` an unreachable registry fails the test; elsewhere it skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.catalog import loading, requests, resolver
from agent.config import paths
from agent.platform import model
from tests.support.agentproc import Agent, Starter

CATALOG = loading.load([paths.bundled_catalog()])
IN_CI = os.environ.get("CI", "").lower() == "true"
# A runner host's PATH: this machine's own (a pyenv shim dir first, with an awscli v1)
# would shadow what apt installs, and the check would rightly refuse it.
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Real downloads of some tens of MB, on a shared machine: more than the suite's default.
# The ensure's wait and the purge's must fit inside it, or a kill would leave packages.
pytestmark = pytest.mark.timeout(1500)

# The pip and npm features small enough to fetch in CI (a few MB to some tens of MB), as
# labels: node's opt-in npm source is one (its package is about 50 MB).
REGISTRY_FEATURES = ["bazelisk", "ninja", "uv", "zig", "node@20.19.6;source=npm"]
# The system features whose packages Debian ships and this image lacks (jq is in it, so
# installing it would prove nothing).
APT_FEATURES = ["awscli", "hello", "ruby"]


async def ensure(agent: Agent, label: str) -> dict[str, Any]:
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    timeout = aiohttp.ClientTimeout(total=900)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.post("http://agent/v1/ensure", json={"requests": [label]}) as resp,
    ):
        lines = [json.loads(line) async for line in resp.content if line.strip()]
    result: dict[str, Any] = lines[-1]
    return result


def unreachable(result: dict[str, Any]) -> bool:
    text = json.dumps(result)
    return any(s in text for s in ("NewConnectionError", "ENOTFOUND", "Temporary failure"))


HERE = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")


def planned_check(ident: str, version: str | None) -> tuple[list[str], str]:
    """The check as the plan renders it for this machine (argv, expected text)."""
    target = HERE
    label = f"feature:{ident}@{version}" if version else f"feature:{ident}"
    plan = resolver.resolve([requests.parse(label)], CATALOG, target, store_root="/s")
    [entry] = [f for f in plan.features if f["id"] == ident]
    return entry["check"]["argv"], entry["check"]["expect"]


def run_check(ident: str, version: str | None, result: dict[str, Any]) -> None:
    """The check, run as a job would: with the PATH the result exports."""
    argv, expect = planned_check(ident, version)
    env = {**os.environ, "PATH": os.pathsep.join([*result["path"], HOST_PATH])}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, (ident, done.stdout, done.stderr)
    assert expect in done.stdout + done.stderr, (ident, expect, done.stdout)


@pytest.mark.parametrize("label", REGISTRY_FEATURES)
async def test_a_registry_feature_installs_for_real_and_passes_its_check(
    label: str, start_agent: Starter
) -> None:
    ident = label.split(";")[0].split("@")[0]
    feature = CATALOG.features[ident]
    methods = {m.method for m in feature.install}
    if "npm" in methods and shutil.which("npm") is None:
        pytest.fail("npm is not installed") if IN_CI else pytest.skip("npm is not installed")
    agent = start_agent.start(start_agent.base_config())
    result = await ensure(agent, f"feature:{label}")
    if not result["ok"] and unreachable(result) and not IN_CI:
        pytest.skip("the registry is unreachable from here")
    assert result["ok"] is True, result
    [installed] = [f for f in result["features"] if f["id"] == ident]
    assert installed["result"] == "installed"
    if ";" in label:  # an option that reaches the install: a folder setup-* never takes
        assert Path(installed["entry"]).name.startswith("x64-")
    run_check(ident, installed["version"], result)


def installed_packages() -> set[str]:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}:${Architecture} ${db:Status-Abbrev}\n"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return {line.split()[0] for line in done.stdout.splitlines() if line.split()[1:2] == ["ii"]}


@pytest.mark.usefixtures("needs_root")
@pytest.mark.parametrize("ident", APT_FEATURES)
async def test_a_debian_system_feature_installs_with_apt_and_is_removed_after(
    ident: str, start_agent: Starter
) -> None:
    if shutil.which("apt-get") is None:
        pytest.fail("no apt-get") if IN_CI else pytest.skip("no apt-get here")
    before = installed_packages()
    [method] = CATALOG.features[ident].install
    wanted = {f"{p}:" for p in method.packages["apt"]}  # type: ignore[union-attr]
    already = sorted(p for p in before if any(p.startswith(w) for w in wanted))
    assert already == [], f"{ident}'s packages are installed already: {already}"
    try:
        # Host mode: the agent runs apt itself (in a runner pod the runner's hook does).
        config = start_agent.base_config()
        config["installer"] = {"system_packages": "host"}
        agent = start_agent.start(config, env={"PATH": HOST_PATH})
        result = await ensure(agent, f"feature:{ident}")
        assert result["ok"] is True, json.dumps(result)[-1500:]
        [installed] = [f for f in result["features"] if f["id"] == ident]
        assert installed["result"] == "installed"
        run_check(ident, None, result)
    finally:
        added = sorted(installed_packages() - before)
        if added:
            subprocess.run(
                ["apt-get", "purge", "-y", "-q", *added],
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                capture_output=True, timeout=500, check=False,
            )  # fmt: skip
    assert installed_packages() - before == set(), "the purge left packages behind"


def test_the_lists_name_real_features() -> None:
    for label in REGISTRY_FEATURES:
        request = requests.parse(f"feature:{label}")
        plan = resolver.resolve([request], CATALOG, HERE, store_root="/s")
        [step] = [f for f in plan.features if f["id"] == request.id]
        assert step["method"] in ("pip", "npm"), label
    for ident in APT_FEATURES:
        assert ident in CATALOG.features, ident
    for ident in APT_FEATURES:
        assert {m.method for m in CATALOG.features[ident].install} == {"system"}
