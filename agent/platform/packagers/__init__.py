"""System package managers: one module per manager, chosen through one registry.

Each manager's module (:mod:`.apt`, :mod:`.dnf`, :mod:`.yum`, :mod:`.zypper`, :mod:`.apk`,
:mod:`.pacman`, :mod:`.brew`, :mod:`.choco`, :mod:`.winget`) holds everything the agent
knows about that manager: its binary, the characters its package names may use, the
install argv, the arguments that keep its downloads in the shared package cache, its
index refresh, the read-only query that tells whether packages are installed, the folders
its repositories live in, the locks it takes and the explanation of its own errors. It
subclasses :class:`~agent.platform.packagers.base.Packager` and exposes the instance as
``PACKAGER``. Shared pieces: :mod:`.base` (the base class and its data), :mod:`.names`
(name checks), :mod:`.families` (which manager a platform uses, in fallback order),
:mod:`.registry` (names to modules) and :mod:`.rpm` (the rpm database query dnf, yum and
zypper share).

**Adding a manager is one new file and one registry line**: write
``agent/platform/packagers/<name>.py`` with its ``PACKAGER``, and add
``"<name>": "agent.platform.packagers.<name>"`` to
:data:`~agent.platform.packagers.registry.MANAGERS`. (For platform data to name it, its
spelling also belongs in :data:`agent.platform.model.PackageManager`; for a Linux family
to pick it by default, a line in :mod:`.families`.)

Policy: every command is non-interactive, skips recommended/weak dependencies where the
manager has that notion, and waits up to ``lock_timeout_s`` for another package manager
run to finish where the manager can wait (apt, zypper, apk). Commands are argv tuples
plus the environment variables to add, never shell strings, and every package name is
checked first (:mod:`.names`), so a name can never become an option
(``--allow-unauthenticated``), a second word or a second command. Standard library only,
Python 3.8 syntax: the job hook reuses this package.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.platform import model
from agent.platform.packagers import base, families, names, registry
from agent.platform.packagers.base import Cached, Failure, InstallCommand, Packager, Query
from agent.platform.packagers.families import manager_for, probe_order
from agent.platform.packagers.registry import get

__all__ = [
    "BINARIES",
    "Cached",
    "Failure",
    "InstallCommand",
    "Packager",
    "Query",
    "base",
    "check_package_name",
    "families",
    "get",
    "install_command",
    "install_commands",
    "manager_for",
    "names",
    "probe_order",
    "registry",
]

BINARIES = registry.BINARIES


def check_package_name(manager: model.PackageManager, name: str) -> str:
    """Return ``name`` if ``manager`` may be given it, else raise :class:`PlatformError`."""
    return names.check(get(manager), name)


def install_commands(
    manager: model.PackageManager,
    packages: Sequence[str],
    *,
    lock_timeout_s: int = 300,
) -> list[InstallCommand]:
    """The commands that install ``packages`` with ``manager``, to run in order.

    One command for every manager except winget, which installs one id per run.
    """
    packager = get(manager)
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
    checked = tuple(names.check(packager, name) for name in packages)
    return packager.install_commands(checked, lock_timeout_s)


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
