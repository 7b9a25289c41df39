"""What every package manager module provides: the :class:`Packager` base and the data
its methods return.

A manager module subclasses :class:`Packager` once, fills in the class attributes (its
binary, its name characters, its folders) and the methods it needs, and exposes the one
instance as ``PACKAGER``. Every method is pure: it builds argv tuples and reads command
output, and never touches the file system or runs anything (the host executor does).
Standard library only and Python 3.8 syntax (annotations are postponed, so they may
use newer spellings): the job hook reuses this package on old Pythons.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import ClassVar


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
        """``base`` (usually a clean environment) with this command's variables on top."""
        return {**base, **dict(self.env)}


@dataclass(frozen=True)
class Cached:
    """An install argv that keeps the manager's downloads in the shared package cache,
    and the folders under the cache that must exist before it runs."""

    argv: tuple[str, ...]
    folders: tuple[PurePath, ...] = ()


@dataclass(frozen=True)
class Query:
    """A read-only command that asks the manager whether ``names`` are all installed;
    :meth:`Packager.says_installed` reads its answer."""

    argv: tuple[str, ...]
    names: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Failure:
    """A failed install, as :meth:`Packager.explain` gets it: the output (the tail), the
    exit status, the packages asked for and what the index refresh could not fetch."""

    output: str
    returncode: int
    packages: tuple[str, ...]
    fetch_failures: tuple[str, ...] = ()

    def named(self, pattern: re.Pattern[str]) -> list[str]:
        """The names ``pattern`` finds in the output, once each in order; those asked
        for first, when any are (a manager also names what it resolved on the way)."""
        found = list(dict.fromkeys(pattern.findall(self.output)))
        return [n for n in found if n in self.packages] or found


class Packager(abc.ABC):
    """One package manager. Subclass it in the manager's own module (see the package
    docstring); the defaults here are "the manager has no such notion"."""

    name: ClassVar[str]
    """The registry key, as spelled in :data:`agent.platform.model.PackageManager`."""
    binary: ClassVar[str]
    """The program the install runs, also what detection looks for on PATH."""
    oses: ClassVar[tuple[str, ...]]
    """The operating systems it installs onto."""
    name_chars: ClassVar[str]
    """Characters a package name may use after its leading letter or digit."""
    leading_chars: ClassVar[str] = ""
    """Characters besides letters and digits a name may start with (dnf's ``@group``)."""

    repository_folders: ClassVar[tuple[str, ...]] = ()
    """Folders a plan may write repository definitions and signing keys into."""
    lock_files: ClassVar[tuple[str, ...]] = ()
    """Files the manager takes fcntl write locks on; the executor says who holds them."""
    index_folder: ClassVar[str | None] = None
    """Where the downloaded index lives, when the executor may skip a refresh that ran
    recently (it keeps its own time stamp there); None: refresh whenever asked."""
    index_glob: ClassVar[str] = "*"
    """Files in :attr:`index_folder` that show an index was downloaded at all."""
    success_codes: ClassVar[frozenset[int]] = frozenset({0})
    """Exit statuses that mean the install succeeded."""

    @abc.abstractmethod
    def install_commands(self, names: tuple[str, ...], lock_timeout_s: int) -> list[InstallCommand]:
        """The commands that install ``names`` (already checked), to run in order."""

    def refresh_command(self, lock_timeout_s: int) -> tuple[str, ...] | None:
        """The argv that refreshes the package index, or None (see InstallCommand)."""
        return None

    def with_cache(self, argv: Sequence[str], cache: PurePath) -> Cached:
        """``argv`` keeping downloads under ``cache`` (the shared volume); unchanged by
        default, for managers whose cache cannot be moved per command."""
        return Cached(argv=tuple(argv))

    @abc.abstractmethod
    def installed_queries(self, names: tuple[str, ...]) -> list[Query]:
        """The read-only commands that tell whether ``names`` are all installed."""

    def says_installed(self, query: Query, returncode: int, output: str) -> bool:
        """Whether ``query``'s answer means all its names are installed."""
        return returncode == 0

    def succeeded(self, returncode: int) -> bool:
        """Whether an install that exited ``returncode`` succeeded."""
        return returncode in self.success_codes

    def failed_fetches(self, output: str) -> list[str]:
        """``URL (why)`` for each index the refresh in ``output`` could not fetch."""
        return []

    def explain(self, failure: Failure) -> str | None:
        """A clear message for a failed install, or None if not recognised."""
        return None
