"""The pip method for real: wheels that carry their own binary, from the configured index."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from agent.catalog import loading, requests, resolver
from agent.config import paths
from agent.install import plans, protocol
from agent.platform import model
from agent.store import layout

CATALOG = loading.load([paths.bundled_catalog()])
X64 = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")
ARM64 = model.Platform(os="linux", arch="arm64", libc="glibc", package_manager="apt")


def ensure(store: Path, label: str, target: model.Platform, *, run_check: bool) -> plans.Ensured:
    plan = resolver.resolve([requests.parse(label)], CATALOG, target, store_root=str(store))
    try:
        return plans.ensure_plan(
            layout.Store(store),
            plan.to_data(),
            options=protocol.Options(run_check=run_check, lock_timeout=60),
        )
    except protocol.InstallError as exc:
        offline = "NewConnectionError" in str(exc) or "Network is unreachable" in str(exc)
        if offline and os.environ.get("CI", "").lower() != "true":
            pytest.skip("the package index is unreachable from here")
        raise


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    return int(struct.unpack("<H", header[18:20])[0])


@pytest.mark.parametrize(
    ("label", "binary"),
    [("feature:ninja", "bin/ninja"), ("feature:cmake@3.31", "cmake/data/bin/cmake")],
)
def test_a_wheel_binary_runs_from_a_copy_without_the_agents_venv(
    tmp_path: Path, label: str, binary: str
) -> None:
    done = ensure(tmp_path / "store", label, X64, run_check=True)
    [entry] = done.installed
    assert entry.receipt.check.startswith("ok: ")
    assert entry.receipt.sources
    assert entry.receipt.sources[0].url.endswith(".whl")
    assert len(entry.receipt.sources[0].sha256) == 64
    copy = tmp_path / "elsewhere"
    shutil.copytree(entry.entry.path, copy, symlinks=True)
    bin_dir = (copy / binary).parent
    tool = (copy / binary).name
    proc = subprocess.run(
        [tool, "--version"],
        env={"PATH": f"{bin_dir}:/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert entry.receipt.version.split(".")[0] in proc.stdout
    assert elf_machine(copy / binary) == 62  # x86-64


def test_a_foreign_target_gets_its_own_wheel(tmp_path: Path) -> None:
    done = ensure(tmp_path / "store", "feature:ninja", ARM64, run_check=False)
    [entry] = done.installed
    assert entry.entry.path.name == "arm64"
    assert elf_machine(entry.entry.path / "bin" / "ninja") == 183  # AArch64
    assert entry.receipt.check.startswith("skipped")
    assert entry.receipt.platform["arch"] == "arm64"


def test_a_pip_feature_that_needs_python_is_installed_with_the_python_feature(
    tmp_path: Path,
) -> None:
    """``python`` here is a script feature linking this machine's CPython (the real one
    downloads from outside the registries); the pip feature requires it, so pip runs
    with that interpreter and the console script runs on whatever python3 PATH holds."""
    if os.geteuid() != 0:
        pytest.skip("the python stand-in is a sandboxed script: needs root")
    real = os.path.realpath(sys.executable)
    version = ".".join(map(str, sys.version_info[:3]))
    features = tmp_path / "features"
    (features / "python").mkdir(parents=True)
    (features / "python" / "feature.yaml").write_text(
        f"id: python\nname: Python\nversions: ['{version}']\nplatforms: [linux]\n"
        "toolcache_name: Python\ninstall:\n  - method: script\n    platforms: [linux]\n"
        "env: {path: [bin]}\n"
    )
    (features / "python" / "install.sh").write_text(
        f'mkdir -p "$PREFIX/bin"\nln -s {real} "$PREFIX/bin/python3"\n'
    )
    (features / "cowsay").mkdir()
    (features / "cowsay" / "feature.yaml").write_text(
        "id: cowsay\nname: cowsay\nversions: ['6.1']\nplatforms: [linux]\nrequires: [python]\n"
        "install:\n  - method: pip\n    platforms: [linux]\n    packages: ['cowsay=={version}']\n"
        "env: {path: [bin], vars: {PYTHONPATH: '{prefix}'}}\n"
    )
    store = tmp_path / "store"
    plan = resolver.resolve(
        [requests.parse("feature:cowsay")], loading.load([features]), X64, store_root=str(store)
    ).to_data()
    pip_argv = plan["features"][1]["actions"][0]["argv"]
    short = ".".join(version.split(".")[:2])
    assert pip_argv[pip_argv.index("--python-version") + 1] == short
    done = plans.ensure_plan(layout.Store(store), plan, options=protocol.Options(lock_timeout=60))
    python_entry, cowsay_entry = (i.entry.path for i in done.installed)
    log = (store / ".runner-agent" / "logs" / f"{done.installed[1].entry.key}.log").read_text()
    assert f"pip with {store}/Python/{version}/x64/bin/python3" in log
    script = cowsay_entry / "bin" / "cowsay"
    assert script.read_text().startswith("#!/usr/bin/env python3\n")
    env = {
        "PATH": f"{python_entry}/bin:{cowsay_entry}/bin:/usr/bin",
        "PYTHONPATH": str(cowsay_entry),
    }
    ran = subprocess.run(
        ["cowsay", "-t", "moo"], env=env, capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert "moo" in ran.stdout
