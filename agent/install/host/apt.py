"""apt on the host: a shared archive cache, an index refresh at most once per interval,
visible lock waits, and errors that name the package.

Policy:
- downloaded ``.deb`` files live in ``<package_cache>/apt/archives`` on the shared volume
  (``Dir::Cache::Archives``, with ``APT::Keep-Downloaded-Packages`` forced on, since
  images often clean the cache after every install): a package one host fetched is not
  fetched again by the next. apt verifies each cached file against the signed index
  before it uses it, so a shared cache cannot smuggle in a package;
- ``apt-get update`` runs when the host's lists are empty, when the plan added a
  repository, or when the last successful refresh on this host is older than the
  interval; the time is a stamp file beside the lists themselves, so wiping the lists
  wipes the stamp too. A refresh that could not fetch some index is not counted as one;
- apt's own locks are fcntl locks; before a command the executor asks the kernel who
  holds them (``F_GETLK``) and says so while it waits. ``DPkg::Lock::Timeout`` then
  covers the dpkg lock apt takes itself.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import time
from pathlib import Path

LISTS = Path("/var/lib/apt/lists")
LOCKS = (Path("/var/lib/dpkg/lock-frontend"), LISTS / "lock")
STAMP_NAME = ".runner-agent-refreshed"

_FLOCK = "hhxxxxqqixxxx"  # struct flock on 64-bit Linux: type, whence, start, len, pid


def holder(path: Path) -> int | None:
    """The pid holding a write lock on ``path`` (as apt takes them), or ``None``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, probe))
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else pid


def cache_options(package_cache: Path) -> list[str]:
    """The ``-o`` options that keep downloaded packages in the shared cache."""
    archives = package_cache / "apt" / "archives"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    return [
        "-o",
        f"Dir::Cache::Archives={archives}/",
        "-o",
        "APT::Keep-Downloaded-Packages=true",
    ]


def archives(package_cache: Path) -> Path:
    """The shared folder that holds the ``.deb`` files."""
    return package_cache / "apt" / "archives"


def needs_refresh(interval: float, *, repository_changed: bool, lists: Path = LISTS) -> bool:
    """Whether ``apt-get update`` must run now (see the module's policy)."""
    if repository_changed or interval <= 0:
        return True
    if not any(lists.glob("*_Packages*")):
        return True
    try:
        age = time.time() - (lists / STAMP_NAME).stat().st_mtime
    except OSError:
        return True
    return age >= interval


def mark_refreshed(lists: Path = LISTS) -> None:
    """Record a complete refresh on this host."""
    (lists / STAMP_NAME).touch()


_FAILED_FETCH = re.compile(r"^(?:W|E): Failed to fetch (\S+)\s+(.*)$", re.MULTILINE)
_MISSING = re.compile(
    r"^E: (?:Unable to locate package |Package '?)([^\s']+)'?(?: has no installation candidate)?",
    re.MULTILINE,
)


def failed_fetches(output: str) -> list[str]:
    """``URL (why)`` for each index ``apt-get update`` could not fetch."""
    return [f"{url} ({why.strip()})" for url, why in _FAILED_FETCH.findall(output)]


def explain(output: str, packages: list[str], *, fetch_failures: list[str]) -> str | None:
    """A clear message for a failed ``apt-get install``, or ``None`` if not recognised."""
    missing = [m for m in _MISSING.findall(output) if m in packages] or [
        m for m in _MISSING.findall(output)
    ]
    if missing:
        message = (
            f"apt has no package {', '.join(repr(m) for m in missing)}: check the name in "
            "the feature's packages.apt, and that a repository on this host provides it"
        )
        if fetch_failures:
            message += f"; apt-get update could not fetch {'; '.join(fetch_failures[:3])}"
        return message
    if "Held packages were changed" in output or "held packages" in output.lower():
        held = re.findall(r"^\s+(\S+)", output.split("held packages will be changed:", 1)[-1])
        names = [n for n in held if n in packages] or packages
        return (
            f"apt will not change held package {', '.join(repr(n) for n in names)}: release "
            f"it with 'apt-mark unhold {' '.join(names)}' on this host, or drop it from "
            "the feature"
        )
    if "dpkg was interrupted" in output:
        return (
            "dpkg was interrupted by an earlier run (killed mid-install): run "
            "'dpkg --configure -a' on this host as root, then install again"
        )
    if "unmet dependencies" in output:
        return (
            f"apt cannot install {', '.join(packages)}: unmet dependencies (see the output "
            "below); the host's packages may be held or from another release"
        )
    return None
