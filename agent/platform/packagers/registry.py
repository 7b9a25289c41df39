"""The registry: which module knows each package manager.

:data:`MANAGERS` maps a manager's name to the import string of its module (or to the
module itself); :func:`get` imports it on first use and returns its ``PACKAGER``. This is
the one line to add for a new manager.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Union

from agent.platform import model
from agent.platform.packagers import base

# A runtime alias, so typing's spelling: ``str | ModuleType`` fails on Python 3.8.
Entry = Union[str, ModuleType]  # noqa: UP007

MANAGERS: dict[str, Entry] = {
    "apt": "agent.platform.packagers.apt",
    "dnf": "agent.platform.packagers.dnf",
    "yum": "agent.platform.packagers.yum",
    "zypper": "agent.platform.packagers.zypper",
    "apk": "agent.platform.packagers.apk",
    "pacman": "agent.platform.packagers.pacman",
    "brew": "agent.platform.packagers.brew",
    "choco": "agent.platform.packagers.choco",
    "winget": "agent.platform.packagers.winget",
}


BINARIES: dict[str, str] = {
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
"""The binary each manager runs as, which detection looks for: written out rather than
read from each module, so detecting a platform (the job hook does it at every job start)
imports no manager's module. A test holds it to each ``PACKAGER.binary``."""


def names() -> tuple[str, ...]:
    """Every registered manager, in registry order."""
    return tuple(MANAGERS)


def get(name: str) -> base.Packager:
    """The packager registered as ``name``; :class:`PlatformError` if there is none.

    Raises TypeError when the registered module does not expose a ``PACKAGER`` of that
    name (a mistake in the module, not in the caller's input).
    """
    entry = MANAGERS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise model.PlatformError(f"package manager {name!r} is not one of: {', '.join(MANAGERS)}")
    module = importlib.import_module(entry) if isinstance(entry, str) else entry
    packager = getattr(module, "PACKAGER", None)
    if not isinstance(packager, base.Packager) or packager.name != name:
        raise TypeError(
            f"{module.__name__} is registered as package manager {name!r} but its "
            f"PACKAGER is {packager!r}; expected a base.Packager whose name is {name!r}"
        )
    return packager
