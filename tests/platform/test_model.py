"""Platform spellings, validation, triples and the JSON form."""

from __future__ import annotations

import dataclasses
import json

import pytest

from agent.platform import model


@pytest.mark.parametrize(
    ("spelling", "arch"),
    [
        ("x86_64", "x64"),
        ("amd64", "x64"),
        ("AMD64", "x64"),
        ("x64", "x64"),
        ("aarch64", "arm64"),
        ("arm64", "arm64"),
        ("ARM64", "arm64"),
        ("armv8", "arm64"),
        ("armv8l", "arm"),
        ("armv7", "arm"),
        ("armv7l", "arm"),
        ("armv6l", "arm"),
        ("arm", "arm"),
        ("armhf", "arm"),
        ("ppc64le", "ppc64"),
        ("ppc64", "ppc64"),
        ("s390x", "s390x"),
        ("riscv64", "riscv64"),
        ("i386", "ia32"),
        ("i686", "ia32"),
        ("x86", "ia32"),
        ("ia32", "ia32"),
        ("x86_64\n", "x64"),
    ],
)
def test_machine_spellings_map_to_the_tool_cache_arch(spelling: str, arch: str) -> None:
    assert model.normalize_arch(spelling) == arch


def test_an_unknown_arch_is_named_with_the_accepted_spellings() -> None:
    with pytest.raises(model.PlatformError) as error:
        model.normalize_arch("sparc64")
    message = str(error.value)
    assert "'sparc64'" in message
    assert "x64 (x86_64, amd64, x64)" in message
    assert "ia32 (i386, i686, x86, ia32)" in message


@pytest.mark.parametrize(
    ("spelling", "os_name"),
    [
        ("linux", "linux"),
        ("Linux", "linux"),
        ("darwin", "darwin"),
        ("Darwin", "darwin"),
        ("macos", "darwin"),
        ("macOS", "darwin"),
        ("osx", "darwin"),
        ("mac", "darwin"),
        ("windows", "windows"),
        ("Windows", "windows"),
        ("win32", "windows"),
        ("win", "windows"),
    ],
)
def test_os_spellings_map_to_the_canonical_os(spelling: str, os_name: str) -> None:
    assert model.normalize_os(spelling) == os_name


def test_an_unknown_os_is_named_with_the_accepted_spellings() -> None:
    with pytest.raises(model.PlatformError, match=r"'freebsd'.*darwin \(darwin, macos, osx, mac\)"):
        model.normalize_os("freebsd")


def test_a_platform_error_is_a_value_error() -> None:
    assert issubclass(model.PlatformError, ValueError)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"os": "freebsd", "arch": "x64"}, r"os 'freebsd' is not one of: linux, darwin, windows"),
        ({"os": "linux", "arch": "x86_64"}, r"arch 'x86_64' is not one of: x64, arm64"),
        ({"os": "darwin", "arch": "arm64", "libc": "glibc"}, r"libc 'glibc' given for os 'darwin'"),
        ({"os": "linux", "arch": "x64", "libc": "uclibc"}, r"libc 'uclibc' is not one of"),
        ({"os": "windows", "arch": "x64", "package_manager": "apt"}, r"'apt' does not run on"),
        ({"os": "linux", "arch": "x64", "package_manager": "winget"}, r"expected os windows"),
        ({"os": "linux", "arch": "x64", "package_manager": "npm"}, r"'npm' is not one of"),
        ({"os": "linux", "arch": "x64", "cuda_driver": "12"}, r"cuda_driver '12'.*such as 12.4"),
        ({"os": "linux", "arch": "x64", "cuda_driver": "12.4.1"}, r"cuda_driver '12.4.1'"),
        ({"os": "linux", "arch": "x64", "cuda_driver": "v12.4"}, r"cuda_driver 'v12.4'"),
        ({"os": "linux", "arch": "x64", "cuda_driver": "12.4\n"}, r"cuda_driver '12.4\\n'"),
        ({"os": "linux", "arch": "x64", "distro": ""}, r"distro '' must be a non-empty string"),
        ({"os": "linux", "arch": "x64", "distro_like": ["debian"]}, r"must be a tuple"),
        ({"os": "linux", "arch": "x64", "distro_like": ("",)}, r"non-empty strings"),
    ],
)
def test_an_invalid_platform_is_refused_naming_the_value(
    fields: dict[str, object], match: str
) -> None:
    with pytest.raises(model.PlatformError, match=match):
        model.Platform(**fields)  # type: ignore[arg-type]


def test_linux_libc_may_stay_unknown_and_is_never_assumed() -> None:
    platform = model.Platform(os="linux", arch="x64")
    assert platform.libc is None
    assert platform.triple == "linux/x64"


def test_homebrew_is_allowed_on_linux_and_macos() -> None:
    assert model.Platform(os="linux", arch="x64", package_manager="brew").package_manager == "brew"
    assert model.Platform(os="darwin", arch="arm64", package_manager="brew").triple == (
        "darwin/arm64"
    )


def test_a_cuda_driver_version_is_major_dot_minor() -> None:
    assert model.Platform(os="linux", arch="x64", cuda_driver="12.4").cuda_driver == "12.4"


@pytest.mark.parametrize(
    "triple",
    ["linux/x64/glibc", "linux/arm64/musl", "linux/x64", "darwin/arm64", "windows/x64"],
)
def test_a_triple_parses_back_to_itself(triple: str) -> None:
    platform = model.Platform.parse_triple(triple)
    assert platform.triple == triple
    assert model.Platform.parse_triple(platform.triple) == platform


def test_parse_triple_fills_the_named_fields() -> None:
    assert model.Platform.parse_triple("linux/arm64/musl") == model.Platform(
        os="linux", arch="arm64", libc="musl"
    )


@pytest.mark.parametrize(
    ("triple", "match"),
    [
        ("linux", r"'linux' is not in the form os/arch\[/libc\]"),
        ("linux/x64/glibc/extra", r"not in the form os/arch\[/libc\]"),
        ("linux/x86_64/glibc", r"arch 'x86_64' is not one of"),
        ("Linux/x64", r"os 'Linux' is not one of"),
        ("linux/x64/uclibc", r"libc 'uclibc' is not one of"),
        ("darwin/arm64/glibc", r"libc 'glibc' given for os 'darwin'"),
        ("", r"'' is not in the form"),
    ],
)
def test_a_bad_triple_is_refused_with_the_expected_form(triple: str, match: str) -> None:
    with pytest.raises(model.PlatformError, match=match):
        model.Platform.parse_triple(triple)


def test_the_json_form_has_every_field_with_sorted_keys() -> None:
    platform = model.Platform(
        os="linux",
        arch="x64",
        libc="glibc",
        package_manager="apt",
        distro="ubuntu",
        distro_version="24.04",
        distro_like=("debian",),
        cuda_driver="12.4",
    )
    data = platform.to_json()
    assert list(data) == sorted(data)
    assert data == {
        "arch": "x64",
        "cuda_driver": "12.4",
        "distro": "ubuntu",
        "distro_like": ["debian"],
        "distro_version": "24.04",
        "libc": "glibc",
        "os": "linux",
        "package_manager": "apt",
    }
    assert json.dumps(data) == json.dumps(platform.to_json())


def test_the_json_form_of_a_bare_platform_keeps_the_unset_fields() -> None:
    assert model.Platform(os="darwin", arch="arm64").to_json() == {
        "arch": "arm64",
        "cuda_driver": None,
        "distro": None,
        "distro_like": [],
        "distro_version": None,
        "libc": None,
        "os": "darwin",
        "package_manager": None,
    }


def test_a_platform_is_frozen_and_hashable() -> None:
    platform = model.Platform(os="linux", arch="x64", libc="glibc")
    with pytest.raises(dataclasses.FrozenInstanceError):
        platform.arch = "arm64"  # type: ignore[misc]
    assert {platform, model.Platform.parse_triple("linux/x64/glibc")} == {platform}
