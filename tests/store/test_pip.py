"""The pip method for real: wheels that carry their own binary, from the configured index."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from agent.catalog import loading, requests, resolver
from agent.config import paths
from agent.platform import model
from agent.store import ensuring, installing, layout

CATALOG = loading.load([paths.bundled_catalog()])
X64 = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")
ARM64 = model.Platform(os="linux", arch="arm64", libc="glibc", package_manager="apt")


def ensure(store: Path, label: str, target: model.Platform, *, run_check: bool) -> ensuring.Ensured:
    plan = resolver.resolve([requests.parse(label)], CATALOG, target, store_root=str(store))
    try:
        return ensuring.ensure_plan(
            layout.Store(store),
            plan.to_data(),
            options=installing.Options(run_check=run_check, lock_timeout=60),
        )
    except installing.InstallError as exc:
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
