"""The example manifests (features/examples): they load clean, and the script one installs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.catalog import loading, requests, resolver
from agent.install import plans, protocol
from agent.store import layout
from tests.support import fixtures

EXAMPLES = Path(__file__).resolve().parents[2] / "features" / "examples"


def test_the_examples_load_clean_and_cover_npm_and_script() -> None:
    catalog = loading.load([EXAMPLES])
    assert catalog.problems == []
    methods = {i: {m.method for m in f.install} for i, f in catalog.features.items()}
    assert methods == {"greeting": {"script"}, "semver": {"npm"}}


def test_the_examples_are_not_in_the_bundled_catalog() -> None:
    catalog = loading.load([EXAMPLES.parent])
    assert catalog.problems == []
    assert "greeting" not in catalog.features
    assert "semver" not in catalog.features


def test_the_npm_example_plans_its_package() -> None:
    catalog = loading.load([EXAMPLES])
    plan = resolver.resolve(
        [requests.parse("feature:semver@7.6")], catalog, fixtures.LINUX, store_root="/s"
    ).to_data()
    [feature] = plan["features"]
    assert feature["version"] == "7.6.3"
    assert "semver@7.6.3" in str(feature)


@pytest.mark.skipif(os.geteuid() != 0, reason="the script sandbox switches users: needs root")
def test_the_script_example_installs_and_passes_its_check(tmp_path: Path) -> None:
    catalog = loading.load([EXAMPLES])
    store = tmp_path / "store"
    plan = resolver.resolve(
        [requests.parse("feature:greeting;greeting=hi-there")],
        catalog,
        fixtures.LINUX,
        store_root=str(store),
    ).to_data()
    done = plans.ensure_plan(layout.Store(store), plan, options=protocol.Options(lock_timeout=60))
    [entry] = done.installed
    assert entry.receipt.check.startswith("ok")
    tool = entry.entry.path / "bin" / "greeting"
    ran = subprocess.run([tool], capture_output=True, text=True, check=True)
    assert ran.stdout == "greeting 1.1.0: hi-there\n"


def test_the_npm_example_installs_and_passes_its_check(tmp_path: Path) -> None:
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("needs node and npm")
    catalog = loading.load([EXAMPLES])
    store = tmp_path / "store"
    plan = resolver.resolve(
        [requests.parse("feature:semver@7.6")], catalog, fixtures.LINUX, store_root=str(store)
    ).to_data()
    try:
        done = plans.ensure_plan(
            layout.Store(store), plan, options=protocol.Options(lock_timeout=60)
        )
    except protocol.InstallError as exc:
        if "ENOTFOUND" in str(exc) and os.environ.get("CI", "").lower() != "true":
            pytest.skip("the npm registry is unreachable from here")
        raise
    [entry] = done.installed
    assert entry.receipt.check == "ok: SemVer 7.6.3"
