"""Detection of the running machine, against fake root folders and on this machine."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from agent.platform import detect, model
from tests.platform import osrelease_samples as samples

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the fake roots describe Linux userlands"
)

HOST_ARCH = model.normalize_arch(platform.machine())


def put(root: Path, relative: str, text: str = "", *, executable: bool = False) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if executable:
        path.chmod(0o755)


def test_an_alpine_root_with_the_musl_loader_is_musl_with_apk(tmp_path: Path) -> None:
    put(tmp_path, "etc/os-release", samples.ALPINE_3_20)
    put(tmp_path, "lib/ld-musl-x86_64.so.1")
    put(tmp_path, "sbin/apk", "#!/bin/sh\n", executable=True)
    assert detect.detect(root=tmp_path) == model.Platform(
        os="linux",
        arch=HOST_ARCH,
        libc="musl",
        package_manager="apk",
        distro="alpine",
        distro_version="3.20.3",
    )


def test_a_root_with_a_glibc_loader_is_glibc(tmp_path: Path) -> None:
    put(tmp_path, "etc/os-release", samples.UBUNTU_24_04)
    put(tmp_path, "usr/lib/x86_64-linux-gnu/libc.so.6")
    put(tmp_path, "usr/bin/apt-get", executable=True)
    found = detect.detect(root=tmp_path)
    assert (found.libc, found.package_manager) == ("glibc", "apt")
    assert (found.distro, found.distro_version, found.distro_like) == (
        "ubuntu",
        "24.04",
        ("debian",),
    )


def test_without_loader_or_manager_libc_and_manager_stay_unknown(tmp_path: Path) -> None:
    put(tmp_path, "etc/os-release", samples.DEBIAN_12)
    found = detect.detect(root=tmp_path)
    assert found.libc is None
    assert found.package_manager is None
    assert found.triple == f"linux/{HOST_ARCH}"


def test_a_manager_file_that_is_not_executable_does_not_count(tmp_path: Path) -> None:
    put(tmp_path, "etc/os-release", samples.DEBIAN_12)
    put(tmp_path, "usr/bin/apt-get")
    assert detect.detect(root=tmp_path).package_manager is None


def test_the_rhel_family_falls_back_from_dnf_to_yum(tmp_path: Path) -> None:
    put(tmp_path, "etc/os-release", samples.ROCKY_9)
    put(tmp_path, "usr/bin/yum", executable=True)
    assert detect.detect(root=tmp_path).package_manager == "yum"
    put(tmp_path, "usr/bin/dnf", executable=True)
    assert detect.detect(root=tmp_path).package_manager == "dnf"


def test_centos_7_prefers_yum_even_with_dnf_installed(tmp_path: Path) -> None:
    put(tmp_path, "etc/os-release", samples.CENTOS_7)
    put(tmp_path, "usr/bin/yum", executable=True)
    put(tmp_path, "usr/bin/dnf", executable=True)
    assert detect.detect(root=tmp_path).package_manager == "yum"


def test_an_unknown_distribution_is_probed_for_any_linux_manager(tmp_path: Path) -> None:
    put(tmp_path, "etc/os-release", 'ID=nixos\nVERSION_ID="24.05"\n')
    put(tmp_path, "usr/bin/zypper", executable=True)
    found = detect.detect(root=tmp_path)
    assert (found.distro, found.package_manager) == ("nixos", "zypper")


def test_usr_lib_os_release_is_read_when_etc_has_none(tmp_path: Path) -> None:
    put(tmp_path, "usr/lib/os-release", samples.FEDORA_40)
    found = detect.detect(root=tmp_path)
    assert (found.distro, found.distro_version) == ("fedora", "40")


def test_a_root_without_os_release_has_no_distro(tmp_path: Path) -> None:
    found = detect.detect(root=tmp_path)
    assert (found.distro, found.distro_version, found.distro_like) == (None, None, ())


def test_macos_is_detected_with_homebrew_off_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(detect, "_machine", lambda: "arm64")
    put(tmp_path, "opt/homebrew/bin/brew", executable=True)
    put(tmp_path, "etc/os-release", samples.DEBIAN_12)  # ignored: not Linux
    assert detect.detect(root=tmp_path) == model.Platform(
        os="darwin", arch="arm64", package_manager="brew"
    )


@pytest.mark.skipif(
    not (Path("/etc/debian_version").exists() and platform.machine() == "x86_64"),
    reason="describes the Debian 12 x86_64 development and CI machines",
)
def test_this_debian_machine_is_linux_x64_glibc_with_apt() -> None:
    found = detect.detect()
    assert found.triple == "linux/x64/glibc"
    assert found.package_manager == "apt"
    assert (found.distro, found.distro_version) == ("debian", "12")
    assert found.cuda_driver is None
