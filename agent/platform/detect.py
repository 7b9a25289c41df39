"""Describe the machine this code runs on as a :class:`~agent.platform.model.Platform`.

Policy: this is the only place that looks at the running system, and it only describes
it; planning for a target takes a ``Platform`` as data. The result is a snapshot:
detection does blocking file I/O and PATH lookups, so async callers run it in a thread
(``asyncio.to_thread``). ``root`` points the file-based probes (os-release, the libc
loaders, package-manager binaries) at another tree, such as a mounted image or a test
folder; the OS and CPU always come from the running interpreter.

- os: ``sys.platform``; arch: ``os.uname().machine`` (``platform.machine()`` where
  there is no uname), normalised.
- libc (Linux only): glibc when this process runs on glibc (``os.confstr`` answers
  ``CS_GNU_LIBC_VERSION``, or ``platform.libc_ver()`` says so); else musl when a musl
  loader (``lib/ld-musl-*.so.1``) exists. The process is asked first because Debian's
  ``musl`` package installs that loader on glibc systems. Under another ``root`` only
  files count: a musl loader, then a glibc loader or ``libc.so.6``. Otherwise unset.
- distro: os-release under ``root``; its family picks the managers to look for, in the
  order :func:`agent.platform.packagers.probe_order` gives, and the first whose binary
  is found wins. None found means None: the machine has no manager we could run.
- cuda_driver stays None; the GPU engine fills it in.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from agent.platform import model, osrelease, packagers

_ROOT = Path("/")

# Where package managers live even when PATH lacks them (a service's PATH often has no
# sbin; Alpine's apk is /sbin/apk; Homebrew on Apple silicon is /opt/homebrew/bin/brew).
_BIN_DIRS = (
    "usr/local/sbin",
    "usr/local/bin",
    "usr/sbin",
    "usr/bin",
    "sbin",
    "bin",
    "opt/homebrew/bin",
)

_MUSL_LOADERS = ("lib/ld-musl-*.so.1", "usr/lib/ld-musl-*.so.1")
_GLIBC_FILES = (
    "lib*/ld-linux*.so.*",
    "usr/lib*/ld-linux*.so.*",
    "lib*/libc.so.6",
    "usr/lib*/libc.so.6",
    "lib*/*-linux-gnu*/libc.so.6",
    "usr/lib*/*-linux-gnu*/libc.so.6",
)


def _any_exists(root: Path, patterns: tuple[str, ...]) -> bool:
    return any(next(root.glob(pattern), None) is not None for pattern in patterns)


def _process_is_glibc() -> bool:
    try:
        if os.confstr("CS_GNU_LIBC_VERSION"):
            return True
    except (ValueError, OSError):
        pass  # not a glibc build: the name is unknown or has no value
    import platform  # only here: it costs the job hook ~10 ms at every job start

    return platform.libc_ver()[0] == "glibc"


def _libc(root: Path) -> model.Libc | None:
    if root == _ROOT and _process_is_glibc():
        return "glibc"
    if _any_exists(root, _MUSL_LOADERS):
        return "musl"
    if root != _ROOT and _any_exists(root, _GLIBC_FILES):
        return "glibc"
    return None


def _has_binary(name: str, root: Path) -> bool:
    if root == _ROOT and shutil.which(name) is not None:
        return True
    for folder in _BIN_DIRS:
        candidate = root / folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return True
    return False


def _package_manager(
    family: str, *, os_name: model.OS, version_id: str | None, root: Path
) -> model.PackageManager | None:
    for manager in packagers.probe_order(family, os=os_name, version_id=version_id):
        if _has_binary(packagers.BINARIES[manager], root):
            return manager
    return None


def _machine() -> str:
    # What platform.machine() answers, without importing platform (see _process_is_glibc).
    if hasattr(os, "uname"):
        return os.uname().machine
    import platform

    return platform.machine()


def detect(*, root: Path = _ROOT) -> model.Platform:
    """Describe this machine (blocking; see the module docstring for every probe)."""
    os_name = model.normalize_os(sys.platform)
    arch = model.normalize_arch(_machine())
    if os_name != "linux":
        manager = _package_manager("unknown", os_name=os_name, version_id=None, root=root)
        return model.Platform(os=os_name, arch=arch, package_manager=manager)
    osr = osrelease.read_os_release(
        paths=(root / "etc" / "os-release", root / "usr" / "lib" / "os-release")
    )
    family = osrelease.family(osr) if osr is not None else "unknown"
    version_id = osr.version_id if osr is not None else None
    return model.Platform(
        os=os_name,
        arch=arch,
        libc=_libc(root),
        package_manager=_package_manager(family, os_name=os_name, version_id=version_id, root=root),
        distro=osr.id if osr is not None else None,
        distro_version=version_id,
        distro_like=osr.id_like if osr is not None else (),
    )
