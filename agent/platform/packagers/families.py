"""Which manager a platform uses, in fallback order (the first is :func:`manager_for`'s
answer; detection takes the first whose binary it finds):

- debian: apt
- rhel: dnf, then yum; yum first when VERSION_ID's major is below 8 (EL7 and older)
- fedora: dnf
- amazon: dnf, then yum; yum first below 2022 (Amazon Linux 2 is "2", AL1 "2018.03";
  AL2023 is "2023")
- suse: zypper
- alpine: apk
- arch: pacman
- darwin: brew
- windows: winget, then choco (choco only when detection finds no winget)
- any other Linux: none; detection probes apt, dnf, yum, zypper, apk, pacman in turn.

This is policy across managers, so it lives here and not in a manager's module: a new
manager needs a line here only if a family should pick it without being told.
"""

from __future__ import annotations

from agent.platform import model

_UNKNOWN_LINUX: tuple[model.PackageManager, ...] = ("apt", "dnf", "yum", "zypper", "apk", "pacman")


def _major(version_id: str | None) -> int | None:
    head = (version_id or "").split(".", 1)[0]
    return int(head) if head.isascii() and head.isdigit() else None


def _linux_order(family: str, version_id: str | None) -> tuple[model.PackageManager, ...]:
    major = _major(version_id)
    if family == "debian":
        return ("apt",)
    if family == "rhel":
        return ("yum", "dnf") if major is not None and major < 8 else ("dnf", "yum")
    if family == "fedora":
        return ("dnf",)
    if family == "amazon":
        return ("yum", "dnf") if major is not None and major < 2022 else ("dnf", "yum")
    if family == "suse":
        return ("zypper",)
    if family == "alpine":
        return ("apk",)
    if family == "arch":
        return ("pacman",)
    return ()


def probe_order(
    family: str, *, os: model.OS, version_id: str | None = None
) -> tuple[model.PackageManager, ...]:
    """The managers to look for on such a system, best first (see the module docstring)."""
    if os == "darwin":
        return ("brew",)
    if os == "windows":
        return ("winget", "choco")
    return _linux_order(family, version_id) or _UNKNOWN_LINUX


def manager_for(
    family: str, *, os: model.OS, version_id: str | None = None
) -> model.PackageManager | None:
    """The package manager such a system uses; None for a Linux family not listed above.

    ``version_id`` is os-release's VERSION_ID: it picks yum over dnf on EL7 and Amazon
    Linux 2. Detection on a live machine also checks which binaries exist (see
    :mod:`agent.platform.detect`); this answer is for a target described only as data.
    """
    if os == "linux":
        order = _linux_order(family, version_id)
        return order[0] if order else None
    return probe_order(family, os=os, version_id=version_id)[0]
