"""System package managers: which one a platform uses, and the argv that installs with it.

Policy: every command is non-interactive, skips recommended/weak dependencies where the
manager has that notion, and waits up to ``lock_timeout_s`` for another package manager
run to finish where the manager can wait (apt, zypper, apk). Commands are argv tuples
plus the environment variables to add, never shell strings, and every package name is
checked first: it must start with a letter or digit and use only the characters its
manager needs, so a name can never become an option (``--allow-unauthenticated``), a
second word or a second command.

Which manager a family uses, in fallback order (the first is :func:`manager_for`'s
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
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.platform import model

# The binary each manager is run as.
BINARIES: dict[model.PackageManager, str] = {
    "apt": "apt-get",
    "dnf": "dnf",
    "yum": "yum",
    "zypper": "zypper",
    "apk": "apk",
    "pacman": "pacman",
    "brew": "brew",
    "choco": "choco",
    "winget": "winget",
}

# Characters a name may use after its leading letter or digit, per manager:
# apt: "pkg=1:2.0~rc1-1" (version, epoch, tilde), "pkg:arm64", "pkg/bookworm-backports";
# dnf/yum: "gcc-c++", "pkg.x86_64", "@development" groups (the only leading "@");
# zypper: "pkg=1.2", "pattern:devel_basis"; apk: "pkg=1.2-r0", "pkg@testing";
# pacman: "extra/pkg"; brew: "python@3.12", "owner/tap/formula";
# choco and winget: dotted ids such as "Notepad++.Notepad++".
_EXTRA_CHARS: dict[model.PackageManager, str] = {
    "apt": ".+-_:=~/",
    "dnf": ".+-_@:/",
    "yum": ".+-_@:/",
    "zypper": ".+-_:=/",
    "apk": ".+-_@:=",
    "pacman": ".+-_@/",
    "brew": ".+-_@/",
    "choco": ".+-_",
    "winget": ".+-_",
}
_LEADING_AT: frozenset[model.PackageManager] = frozenset({"dnf", "yum"})
_MAX_NAME = 200

_NAME_PATTERNS: dict[model.PackageManager, re.Pattern[str]] = {
    manager: re.compile(
        ("[A-Za-z0-9@]" if manager in _LEADING_AT else "[A-Za-z0-9]")
        + "[A-Za-z0-9"
        + re.escape(extra)
        + "]*"
    )
    for manager, extra in _EXTRA_CHARS.items()
}

_UNKNOWN_LINUX: tuple[model.PackageManager, ...] = ("apt", "dnf", "yum", "zypper", "apk", "pacman")


@dataclass(frozen=True)
class InstallCommand:
    """One install to run: ``argv`` with ``env`` added, after ``refresh`` when wanted.

    ``refresh`` is the argv that updates the package index (same ``env``), or None when
    the install fetches a current index itself or refreshing alone would be unsafe.
    """

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    refresh: tuple[str, ...] | None = None

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` (usually ``os.environ``) with this command's variables set on top."""
        return {**base, **dict(self.env)}


def check_package_name(manager: model.PackageManager, name: str) -> str:
    """Return ``name`` if ``manager`` may be given it, else raise :class:`PlatformError`."""
    pattern = _NAME_PATTERNS[manager]
    if not isinstance(name, str) or len(name) > _MAX_NAME or not pattern.fullmatch(name):
        first = "a letter, digit or @" if manager in _LEADING_AT else "a letter or digit"
        raise model.PlatformError(
            f"package name {name!r} is not acceptable for {manager}: expected at most "
            f"{_MAX_NAME} characters, starting with {first}, then letters, digits and "
            f"{' '.join(_EXTRA_CHARS[manager])} only (no spaces, no leading '-')"
        )
    return name


def install_commands(
    manager: model.PackageManager,
    packages: Sequence[str],
    *,
    lock_timeout_s: int = 300,
) -> list[InstallCommand]:
    """The commands that install ``packages`` with ``manager``, to run in order.

    One command for every manager except winget, which installs one id per run.
    """
    if manager not in BINARIES:
        raise model.PlatformError(
            f"package manager {manager!r} is not one of: {', '.join(model.PACKAGE_MANAGERS)}"
        )
    if isinstance(packages, str):
        raise model.PlatformError(f"packages {packages!r} must be a list of names, not a string")
    if not packages:
        raise model.PlatformError(f"no packages given to install with {manager}")
    if (
        isinstance(lock_timeout_s, bool)
        or not isinstance(lock_timeout_s, int)
        or lock_timeout_s < 0
    ):
        # A negative wait means "forever" to zypper; an install must never wait unbounded.
        raise model.PlatformError(
            f"lock_timeout_s {lock_timeout_s!r} is not a whole number of seconds >= 0"
        )
    names = tuple(check_package_name(manager, name) for name in packages)
    timeout = str(lock_timeout_s)

    if manager == "apt":
        # DPkg::Lock::Timeout (apt >= 1.9.11) waits for the dpkg frontend lock. apt 2.6
        # still fails at once when `update` finds the lists lock held, so a caller should
        # retry a failed refresh. needrestart (Ubuntu 22.04+) reads NEEDRESTART_MODE;
        # "l" lists stale services rather than restarting them: an install for one job must
        # not restart the runner or dockerd under the others.
        # One -q: no progress bars, but the "Get:" and "Need to get" lines stay in the log.
        lock = ("-o", f"DPkg::Lock::Timeout={timeout}")
        return [
            InstallCommand(
                argv=("apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", *names),
                env=(("DEBIAN_FRONTEND", "noninteractive"), ("NEEDRESTART_MODE", "l")),
                refresh=("apt-get", *lock, "update", "-q"),
            )
        ]
    if manager == "dnf":
        # dnf and yum have no lock-timeout option. yum and dnf 4 wait for a running
        # instance's lock themselves, without a bound, so the caller's own deadline is the
        # bound. Both refresh expired metadata on their own, hence no refresh command.
        return [
            InstallCommand(
                argv=("dnf", "install", "-y", "--setopt=install_weak_deps=False", *names)
            )
        ]
    if manager == "yum":
        # yum has no weak dependencies to skip; see dnf about the lock.
        return [InstallCommand(argv=("yum", "install", "-y", *names))]
    if manager == "zypper":
        # libzypp reads ZYPP_LOCK_TIMEOUT (zypp.conf(5)); without it a held lock fails at once.
        return [
            InstallCommand(
                argv=("zypper", "--non-interactive", "install", "--no-recommends", *names),
                env=(("ZYPP_LOCK_TIMEOUT", timeout),),
                refresh=("zypper", "--non-interactive", "refresh"),
            )
        ]
    if manager == "apk":
        # --no-cache and --wait are global options: apk-tools 3 wants them before the
        # applet (after it is a deprecated fallback), and apk-tools 2 takes them there too.
        # --no-cache fetches a current index for this run, so there is nothing to refresh.
        return [InstallCommand(argv=("apk", "--no-cache", "--wait", timeout, "add", *names))]
    if manager == "pacman":
        # No refresh: `pacman -Sy` followed by an install is a partial upgrade, which Arch
        # does not support (new packages against old libraries). Refreshing means
        # `pacman -Syu`, a whole-system upgrade: a decision for the operator, not a side
        # effect of one install. pacman cannot wait for its lock (db.lck); it fails at once.
        return [InstallCommand(argv=("pacman", "-S", "--noconfirm", "--needed", *names))]
    if manager == "brew":
        # Homebrew would otherwise update itself and every tap before each install (slow,
        # and changes versions under other jobs) and clean up old versions after it.
        return [
            InstallCommand(
                argv=("brew", "install", *names),
                env=(
                    ("HOMEBREW_NO_AUTO_UPDATE", "1"),
                    ("HOMEBREW_NO_INSTALL_CLEANUP", "1"),
                    ("HOMEBREW_NO_ENV_HINTS", "1"),
                ),
                refresh=("brew", "update"),
            )
        ]
    if manager == "choco":
        return [InstallCommand(argv=("choco", "install", "-y", "--no-progress", *names))]
    # winget installs exactly one package per run.
    return [
        InstallCommand(
            argv=(
                "winget",
                "install",
                "--exact",
                "--id",
                name,
                "--silent",
                "--accept-package-agreements",
                "--accept-source-agreements",
                "--disable-interactivity",
            )
        )
        for name in names
    ]


def install_command(
    manager: model.PackageManager,
    packages: Sequence[str],
    *,
    lock_timeout_s: int = 300,
) -> InstallCommand:
    """The single command that installs ``packages``; see :func:`install_commands`.

    Raises :class:`PlatformError` when the manager needs several runs (winget, more than
    one package): use :func:`install_commands` for that.
    """
    commands = install_commands(manager, packages, lock_timeout_s=lock_timeout_s)
    if len(commands) != 1:
        raise model.PlatformError(
            f"{manager} installs one package per run and was given {len(commands)}; "
            "use install_commands() for several"
        )
    return commands[0]


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
