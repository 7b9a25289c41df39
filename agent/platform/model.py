"""Platforms as data: operating system, architecture, libc and package manager.

Policy: spellings are the tool cache's (what Node's ``os.arch()`` returns and what
actions/tool-cache uses): ``x64``, ``arm64``, ``arm``, ``ppc64``, ``s390x``, ``riscv64`` and
``ia32``. Machine spellings (``uname -m``, ``platform.machine()``) are accepted only through
:func:`normalize_arch` and :func:`normalize_os`; a :class:`Platform` holds canonical
spellings only, so its :attr:`~Platform.triple` is a stable key. ``libc`` is unset unless it
was observed or stated: a Linux platform with no libc means "unknown", never "glibc".
Whether a target is the machine the agent runs on is decided here and nowhere else:
:func:`same_machine` (its programs run here) and :func:`same_host` (its OS packages install
here too).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, cast, get_args

if TYPE_CHECKING:  # the plan types use this module's Literals; only the types here
    from agent.platform import plans

OS = Literal["linux", "darwin", "windows"]
Libc = Literal["glibc", "musl"]
Arch = Literal["x64", "arm64", "arm", "ppc64", "s390x", "riscv64", "ia32"]
PackageManager = Literal["apt", "dnf", "yum", "zypper", "apk", "pacman", "brew", "choco", "winget"]

OSES: tuple[OS, ...] = get_args(OS)
LIBCS: tuple[Libc, ...] = get_args(Libc)
ARCHES: tuple[Arch, ...] = get_args(Arch)
PACKAGE_MANAGERS: tuple[PackageManager, ...] = get_args(PackageManager)

# Which systems each manager installs onto; Homebrew also runs on Linux.
MANAGER_OSES: dict[PackageManager, tuple[OS, ...]] = {
    "apt": ("linux",),
    "dnf": ("linux",),
    "yum": ("linux",),
    "zypper": ("linux",),
    "apk": ("linux",),
    "pacman": ("linux",),
    "brew": ("darwin", "linux"),
    "choco": ("windows",),
    "winget": ("windows",),
}

# Lower-cased machine spellings. armv8l is a 32-bit ARM userland on an ARMv8 CPU, so it is
# ``arm``; bare "armv8" is what some tools print for AArch64.
_ARCH_SPELLINGS: dict[str, Arch] = {
    "x86_64": "x64",
    "amd64": "x64",
    "x64": "x64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv8": "arm64",
    "armv8l": "arm",
    "armv7": "arm",
    "armv7l": "arm",
    "armv6l": "arm",
    "arm": "arm",
    "armhf": "arm",
    "ppc64le": "ppc64",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "i386": "ia32",
    "i686": "ia32",
    "x86": "ia32",
    "ia32": "ia32",
}

_OS_SPELLINGS: dict[str, OS] = {
    "linux": "linux",
    "darwin": "darwin",
    "macos": "darwin",
    "osx": "darwin",
    "mac": "darwin",
    "windows": "windows",
    "win32": "windows",
    "win": "windows",
}

_CUDA_DRIVER = re.compile(r"[0-9]+\.[0-9]+")


class PlatformError(ValueError):
    """A platform value (spelling, triple, field or package name) is not acceptable.

    The message names the bad value and what was expected.
    """


def _spellings(table: Mapping[str, str]) -> str:
    groups: dict[str, list[str]] = {}
    for spelling, canonical in table.items():
        groups.setdefault(canonical, []).append(spelling)
    return "; ".join(f"{canonical} ({', '.join(names)})" for canonical, names in groups.items())


def normalize_arch(value: str) -> Arch:
    """Map a machine spelling (``x86_64``, ``aarch64``, ``AMD64``...) to the tool cache's."""
    arch = _ARCH_SPELLINGS.get(value.strip().lower())
    if arch is None:
        raise PlatformError(
            f"unknown architecture {value!r}; expected one of: {_spellings(_ARCH_SPELLINGS)}"
        )
    return arch


def normalize_os(value: str) -> OS:
    """Map an OS spelling (``Linux``, ``macOS``, ``win32``...) to the canonical one."""
    os_name = _OS_SPELLINGS.get(value.strip().lower())
    if os_name is None:
        raise PlatformError(
            f"unknown operating system {value!r}; expected one of: {_spellings(_OS_SPELLINGS)}"
        )
    return os_name


def _choice(field: str, value: object, allowed: tuple[str, ...]) -> str:
    # Fields arrive from JSON and YAML too, where the Literal types promise nothing.
    if not isinstance(value, str) or value not in allowed:
        raise PlatformError(f"{field} {value!r} is not one of: {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class Platform:
    """A target platform. Build it from canonical spellings; it validates itself."""

    os: OS
    arch: Arch
    libc: Libc | None = None
    package_manager: PackageManager | None = None
    distro: str | None = None
    distro_version: str | None = None
    distro_like: tuple[str, ...] = ()
    cuda_driver: str | None = None

    def __post_init__(self) -> None:
        _choice("os", self.os, OSES)
        _choice("arch", self.arch, ARCHES)
        if self.libc is not None:
            _choice("libc", self.libc, LIBCS)
            if self.os != "linux":
                raise PlatformError(
                    f"libc {self.libc!r} given for os {self.os!r}; libc is set only for linux"
                )
        if self.package_manager is not None:
            _choice("package_manager", self.package_manager, PACKAGE_MANAGERS)
            oses = MANAGER_OSES[self.package_manager]
            if self.os not in oses:
                raise PlatformError(
                    f"package_manager {self.package_manager!r} does not run on {self.os!r}; "
                    f"expected os {' or '.join(oses)}"
                )
        for field, text in (("distro", self.distro), ("distro_version", self.distro_version)):
            if text is not None and (not isinstance(text, str) or not text):
                raise PlatformError(f"{field} {text!r} must be a non-empty string or None")
        if not isinstance(self.distro_like, tuple) or not all(
            isinstance(item, str) and item for item in self.distro_like
        ):
            raise PlatformError(
                f"distro_like {self.distro_like!r} must be a tuple of non-empty strings"
            )
        if self.cuda_driver is not None and (
            not isinstance(self.cuda_driver, str) or not _CUDA_DRIVER.fullmatch(self.cuda_driver)
        ):
            raise PlatformError(
                f"cuda_driver {self.cuda_driver!r} is not a driver CUDA version; "
                "expected major.minor such as 12.4"
            )

    @property
    def triple(self) -> str:
        """``os/arch/libc`` (``linux/x64/glibc``), or ``os/arch`` when libc is unset."""
        parts = [self.os, self.arch] + ([self.libc] if self.libc is not None else [])
        return "/".join(parts)

    @classmethod
    def parse_triple(cls, triple: str) -> Platform:
        """The platform a triple names; only canonical spellings are accepted."""
        parts = triple.split("/")
        if len(parts) not in (2, 3):
            raise PlatformError(
                f"platform {triple!r} is not in the form os/arch[/libc], "
                "e.g. linux/x64/glibc or darwin/arm64"
            )
        os_name = cast(OS, _choice("os", parts[0], OSES))
        arch = cast(Arch, _choice("arch", parts[1], ARCHES))
        libc = cast(Libc, _choice("libc", parts[2], LIBCS)) if len(parts) == 3 else None
        return cls(os=os_name, arch=arch, libc=libc)

    def to_json(self) -> plans.PlatformData:
        """Every field, keys sorted, ``distro_like`` as a list: stable for hashing and diffs."""
        return {
            "arch": self.arch,
            "cuda_driver": self.cuda_driver,
            "distro": self.distro,
            "distro_like": list(self.distro_like),
            "distro_version": self.distro_version,
            "libc": self.libc,
            "os": self.os,
            "package_manager": self.package_manager,
        }


def same_machine(target: Platform | Mapping[str, object], local: Platform) -> bool:
    """Whether ``target`` (a platform, or a plan's ``platform``) is the machine ``local``
    describes as far as programs go: the same os, arch and libc, so what is built for it
    runs here (its check can run, its wheels load). An unknown libc matches only an
    unknown one."""
    if isinstance(target, Platform):
        return (target.os, target.arch, target.libc) == (local.os, local.arch, local.libc)
    return (target.get("os"), target.get("arch"), target.get("libc")) == (
        local.os,
        local.arch,
        local.libc,
    )


def same_host(target: Platform, local: Platform) -> bool:
    """Whether ``target`` is ``local`` down to its package manager: the same machine
    (:func:`same_machine`) and the same manager, so a ``system`` step for it may run on
    this host (``runner-agent ensure --local``'s host mode)."""
    return same_machine(target, local) and target.package_manager == local.package_manager


def for_host(requested: Platform | None, local: Platform) -> Platform:
    """The target of an ensure on this host: ``local`` when none is requested; a
    requested one that names no package manager gets this host's when it is for this
    host's os (so its ``system`` steps can run here)."""
    if requested is None:
        return local
    if requested.package_manager is None and requested.os == local.os:
        return replace(requested, package_manager=local.package_manager)
    return requested
