"""Whether a target is this machine: one decision, for programs and for OS packages."""

from __future__ import annotations

import pytest

from agent.platform import model

HERE = model.Platform(
    os="linux",
    arch="x64",
    libc="glibc",
    package_manager="apt",
    distro="ubuntu",
    distro_version="24.04",
    distro_like=("debian",),
)


@pytest.mark.parametrize(
    ("target", "same"),
    [
        (model.Platform(os="linux", arch="x64", libc="glibc"), True),
        (model.Platform(os="linux", arch="x64", libc="glibc", package_manager="dnf"), True),
        (model.Platform(os="linux", arch="arm64", libc="glibc"), False),
        (model.Platform(os="linux", arch="x64", libc="musl"), False),
        (model.Platform(os="linux", arch="x64"), False),  # an unknown libc is not glibc
        (model.Platform(os="darwin", arch="x64"), False),
    ],
)
def test_the_same_machine_is_the_same_os_arch_and_libc(target: model.Platform, same: bool) -> None:
    assert model.same_machine(target, HERE) is same
    # A plan's platform (its JSON form) decides the same way.
    assert model.same_machine(target.to_json(), HERE) is same


def test_an_unknown_libc_matches_only_an_unknown_one() -> None:
    unknown = model.Platform(os="linux", arch="x64")
    assert model.same_machine(unknown, unknown)
    assert model.same_machine({"os": "linux", "arch": "x64", "libc": None}, unknown)
    assert not model.same_machine({"os": "linux", "arch": "x64"}, HERE)


def test_the_same_host_also_has_the_same_package_manager() -> None:
    assert model.same_host(HERE, HERE)
    assert model.same_host(
        model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt"), HERE
    )
    dnf = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="dnf")
    assert not model.same_host(dnf, HERE)
    assert not model.same_host(model.Platform(os="linux", arch="x64", libc="glibc"), HERE)
    arm = model.Platform(os="linux", arch="arm64", libc="glibc", package_manager="apt")
    assert not model.same_host(arm, HERE)


def test_an_ensure_on_this_host_targets_it_unless_told_otherwise() -> None:
    assert model.for_host(None, HERE) is HERE
    # No package manager named, same os: this host's, so its system steps can run here.
    bare = model.Platform(os="linux", arch="x64", libc="glibc")
    filled = model.for_host(bare, HERE)
    assert filled.package_manager == "apt"
    assert model.same_host(filled, HERE)
    arm = model.Platform(os="linux", arch="arm64", libc="glibc")
    assert model.for_host(arm, HERE).package_manager == "apt"
    assert not model.same_host(model.for_host(arm, HERE), HERE)
    # A manager named stays; another os gets none of this host's.
    dnf = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="dnf")
    assert model.for_host(dnf, HERE) is dnf
    mac = model.Platform(os="darwin", arch="arm64")
    assert model.for_host(mac, HERE) is mac
