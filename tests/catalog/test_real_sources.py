"""The bundled features against the real package managers (PyPI through pip, apt).

pip resolves each pip feature's newest version for every platform its manifest claims,
from the index pip is configured with, using the plan's own argv plus --dry-run, so
only metadata is fetched. apt runs the plan for hello: its refresh for real, and its
install with -s (simulate), as root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.catalog import loading, requests, resolver
from agent.config import paths
from agent.platform import model

CATALOG = loading.load([paths.bundled_catalog()])


def pip_cases() -> list[tuple[str, str]]:
    cases = []
    for ident in ("ninja", "cmake", "uv", "zig"):
        feature = CATALOG.features[ident]
        for pattern in feature.platforms:
            cases.append((ident, pattern))
    return cases


def dry_run(ident: str, pattern: str, workdir: Path) -> tuple[str, str, int, str, list[str]]:
    os_name, arch, *rest = pattern.split("/")
    target = model.Platform(
        os=os_name,  # type: ignore[arg-type]
        arch=arch,  # type: ignore[arg-type]
        libc=(rest[0] if rest else "glibc") if os_name == "linux" else None,  # type: ignore[arg-type]
    )
    plan = resolver.resolve(
        [requests.parse(f"feature:{ident}")], CATALOG, target, store_root=str(workdir / "store")
    )
    [run] = plan.features[0]["actions"]
    # One report per case: linux/x64/glibc and linux/x64/musl run at the same time.
    report = workdir / f"{ident}-{pattern.replace('/', '-')}.json"
    argv = [sys.executable, *run["argv"][1:]]
    argv[argv.index("install") + 1 : argv.index("install") + 1] = [
        "--dry-run",
        "--quiet",
        "--ignore-installed",
        "--report",
        str(report),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    files = []
    if proc.returncode == 0:
        data = json.loads(report.read_text())
        files = [i["download_info"]["url"].rsplit("/", 1)[-1] for i in data["install"]]
    return ident, pattern, proc.returncode, proc.stderr[-500:], files


def test_every_pip_platform_the_manifests_claim_has_a_wheel(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda c: dry_run(*c, tmp_path), pip_cases()))
    failures = [f"{i} {p}: {err}" for i, p, rc, err, _ in results if rc != 0]
    offline = failures and all("NewConnectionError" in f or "Network" in f for f in failures)
    if offline and os.environ.get("CI", "").lower() != "true":
        pytest.skip("the package index is unreachable from here")
    assert failures == []
    for ident, pattern, _, _, files in results:
        [wheel] = files
        method = next(m for m in CATALOG.features[ident].install if m.method == "pip")
        package = method.packages[0].partition("==")[0]  # type: ignore[union-attr]
        assert wheel.startswith(f"{package.replace('-', '_')}-"), (pattern, wheel)
        assert wheel.endswith(".whl")


@pytest.mark.usefixtures("needs_root")
def test_the_hello_plan_runs_under_apt() -> None:
    target = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")
    plan = resolver.resolve([requests.parse("feature:hello")], CATALOG, target, store_root="/s")
    refresh, install = plan.features[0]["actions"]
    env = os.environ | refresh["env"]
    subprocess.run(refresh["argv"], env=env, check=True, timeout=300, capture_output=True)
    proc = subprocess.run(
        [*install["argv"], "-s"], env=env, check=False, timeout=300, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "Inst hello " in proc.stdout


def test_ninja_installs_from_its_plan_and_passes_its_check(tmp_path: Path) -> None:
    # The plan for this machine, executed by hand: pip into the prefix, then the check
    # with the plan's PATH. bin/ninja must be the real binary, not a Python entry point.
    target = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")
    plan = resolver.resolve(
        [requests.parse("feature:ninja")], CATALOG, target, store_root=str(tmp_path)
    )
    [step] = plan.features
    [run] = step["actions"]
    proc = subprocess.run(
        [sys.executable, *run["argv"][1:]], capture_output=True, text=True, timeout=300, check=False
    )
    offline = proc.returncode != 0 and "NewConnectionError" in proc.stderr
    if offline and os.environ.get("CI", "").lower() != "true":
        pytest.skip("the package index is unreachable from here")
    assert proc.returncode == 0, proc.stderr
    binary = Path(step["prefix"]) / "bin" / "ninja"
    assert binary.read_bytes()[:4] == b"\x7fELF"
    env = os.environ | {"PATH": os.pathsep.join([*step["env"]["path"], "/usr/bin", "/bin"])}
    check = subprocess.run(
        step["check"]["argv"], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    assert step["check"]["expect"] in check.stdout
