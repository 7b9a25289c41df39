"""Where things live in the store, and the store's format version.

::

    <root>/<toolcache_name>/<version>/<arch>/          the entry (what setup-* reads)
    <root>/<toolcache_name>/<version>/<arch>.complete  the marker, written last
    <root>/.runner-agent/format                        store format version
    <root>/.runner-agent/locks/<name>@<version>@<arch>.lock
    <root>/.runner-agent/staging/<random>/             same filesystem as the entries
    <root>/.runner-agent/receipts/<name>@<version>@<arch>.json
    <root>/.runner-agent/downloads/<sha256[:2]>/<sha256>

Policy: an agent refuses a store whose format is newer than it understands, with an error
that says so, so old and new agents can share a volume through a rolling upgrade: the
new one must not write what the old one misreads, and the old one stops before guessing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

FORMAT = 1
META = ".runner-agent"


class StoreError(Exception):
    """The store cannot be used; the message says why and what to do. The subclasses
    below are the cases a caller tells apart."""


class NoStore(StoreError):
    """There is no store at the root yet (nothing was ever installed there); cache
    management has nothing to work on and creates none."""


class FormatError(StoreError):
    """The store's format file is unreadable, garbled, or newer than this agent."""


class Unwritable(StoreError):
    """The store (or one of its folders or files) cannot be created or written: a
    volume not mounted, read-only, or with the wrong owner."""


@dataclass(frozen=True)
class Entry:
    """One entry's paths. ``leaf`` is the arch folder name (``x64``, or a variant)."""

    root: Path
    name: str
    version: str
    leaf: str

    @property
    def key(self) -> str:
        """``name@version@leaf``: the entry's name in locks and receipts."""
        return f"{self.name}@{self.version}@{self.leaf}"

    @property
    def path(self) -> Path:
        """The entry folder."""
        return self.root / self.name / self.version / self.leaf

    @property
    def marker(self) -> Path:
        """The completion marker, a sibling of the entry folder."""
        return self.root / self.name / self.version / f"{self.leaf}.complete"

    @property
    def receipt(self) -> Path:
        """The receipt file."""
        return self.root / META / "receipts" / f"{self.key}.json"

    @property
    def lock(self) -> Path:
        """The lock file."""
        return self.root / META / "locks" / f"{self.key}.lock"


class Store:
    """A store root, checked and initialised on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = root / META
        self.staging = self.meta / "staging"
        self.downloads = self.meta / "downloads"

    def entry(self, name: str, version: str, leaf: str) -> Entry:
        """The entry for ``name``/``version``/``leaf``."""
        for part in (name, version, leaf):
            # "@" joins the parts in lock and receipt names, so it may not appear in one.
            if (
                not part
                or part.startswith(".")
                or any(c in part for c in "/@\0\\")
                or not part.isprintable()
            ):
                raise StoreError(f"{part!a} cannot name a store folder")
        return Entry(self.root, name, version, leaf)

    def _sweep_partials(self) -> None:
        # Downloads a killed process left half-written: a live download touches its file
        # continuously, so one untouched for an hour is garbage.
        now = time.time()
        for path in self.downloads.glob("*/.*.partial"):
            if _old(path, now):
                with contextlib.suppress(OSError):
                    path.unlink()

    def open(self) -> None:
        """Create the metadata folders and check (or write) the format version.

        Once per root and process: the warm path (an entry already installed) calls this
        on every ensure, and must cost nothing.
        """
        key = str(self.root)
        if key in _OPENED:
            return
        self.prepare()
        _OPENED.add(key)

    def open_folders(self) -> None:
        """Create the metadata folders (cheap when they exist)."""
        for folder in (self.meta / "locks", self.meta / "receipts", self.staging, self.downloads):
            folder.mkdir(parents=True, exist_ok=True)

    def prepare(self) -> None:
        """What :meth:`open` does, every time: installs call it, since the volume may have
        been wiped (or the format changed) since this process first opened it."""
        try:
            for folder in (
                self.meta / "locks",
                self.meta / "receipts",
                self.staging,
                self.downloads,
            ):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unwritable(
                f"cannot prepare the store at {self.root}: {exc.strerror}; check cache.root "
                "and that the volume is mounted writable for the agent"
            ) from exc
        self._sweep_partials()
        path = self.meta / "format"
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            try:
                write_atomic(path, f"{FORMAT}\n".encode())
            except OSError as exc:
                raise Unwritable(f"cannot write {path}: {exc.strerror}") from exc
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise FormatError(f"cannot read the store format at {path}: {exc}") from exc
        if not text.isdigit():
            raise FormatError(f"{path} holds {text[:40]!a}; expected a format number")
        if int(text) > FORMAT:
            raise FormatError(
                f"the store at {self.root} has format {text}, newer than this agent's {FORMAT}: "
                "a newer agent wrote it; upgrade this agent (or give it another cache.root)"
            )


PARTIAL_MAX_AGE = 3600.0
_OPENED: set[str] = set()


def _old(path: Path, now: float) -> bool:
    try:
        return now - path.lstat().st_mtime > PARTIAL_MAX_AGE
    except OSError:
        return False


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a unique temp file in the same folder, fsync, rename.

    The temp name is unique per call (threads and pods with equal PIDs share the volume)
    and the temp file is removed on failure. The mode is set explicitly, whatever the
    agent's umask: runner and job containers read the store under other UIDs.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
