"""The npm method for real: a small package with a bin, from npm's configured registry."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.catalog import loading, requests, resolver
from agent.install import plans, protocol
from agent.platform import model
from agent.store import layout

LINUX = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")


@pytest.fixture
def catalog(tmp_path: Path) -> loading.Catalog:
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("needs node and npm")
    folder = tmp_path / "features" / "semver"
    folder.mkdir(parents=True)
    (folder / "feature.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "semver",
                "name": "semver CLI",
                "versions": ["7.6.3"],
                "platforms": ["linux"],
                "toolcache_name": "semver",
                "install": [
                    {"method": "npm", "platforms": ["linux"], "packages": ["semver@{version}"]}
                ],
                "env": {"path": ["bin"]},
                "check": {"command": ["semver", "1.2.3"], "expect": "1.2.3"},
            }
        )
    )
    return loading.load([tmp_path / "features"])


def test_an_npm_package_with_a_bin_installs_and_runs_from_elsewhere(
    tmp_path: Path, catalog: loading.Catalog
) -> None:
    store = tmp_path / "store"
    plan = resolver.resolve(
        [requests.parse("feature:semver")], catalog, LINUX, store_root=str(store)
    )
    try:
        done = plans.ensure_plan(
            layout.Store(store), plan.to_data(), options=protocol.Options(lock_timeout=60)
        )
    except protocol.InstallError as exc:
        if "ENOTFOUND" in str(exc) and os.environ.get("CI", "").lower() != "true":
            pytest.skip("the npm registry is unreachable from here")
        raise
    [entry] = done.installed
    assert entry.receipt.check == "ok: 1.2.3"
    link = entry.entry.path / "bin" / "semver"
    assert link.is_symlink()
    assert not os.path.isabs(os.readlink(link))
    copy = tmp_path / "elsewhere"
    shutil.copytree(entry.entry.path, copy, symlinks=True)
    node_dir = Path(shutil.which("node") or "/usr/bin/node").parent
    proc = subprocess.run(
        ["semver", "-r", "^7", "7.1.0"],
        env={"PATH": f"{copy / 'bin'}:{node_dir}:/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == "7.1.0"
    assert not list((store / ".runner-agent" / "staging").iterdir())


def test_steps_get_a_clean_environment_that_keeps_proxies_and_ca_bundles() -> None:
    from agent.install import running

    env = running.environment(
        {"FLAVOUR": "big"},
        base={
            "PATH": "/usr/bin",
            "https_proxy": "http://proxy:3128",
            "NODE_EXTRA_CA_CERTS": "/etc/ssl/extra.pem",
            "PIP_INDEX_URL": "https://mirror/simple",
            "GITHUB_TOKEN": "secret",
            "AWS_SECRET_ACCESS_KEY": "secret",
        },
    )
    assert env == {
        "PATH": "/usr/bin",
        "https_proxy": "http://proxy:3128",
        "NODE_EXTRA_CA_CERTS": "/etc/ssl/extra.pem",
        "PIP_INDEX_URL": "https://mirror/simple",
        "FLAVOUR": "big",
    }
