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
import time
from dataclasses import dataclass
from pathlib import Path

from agent.store import nofollow

FORMAT = 1
META = nofollow.META


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
    def display(self) -> str:
        """``name/version/leaf`` (``node/22.21.1/x64``, ``node/22.21.1/x64-musl``): the
        tool-cache form, the entry's name in everything a user reads."""
        return display(self.key)

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


def display(key: str) -> str:
    """The tool-cache form of a ``name@version@leaf`` key (the leaf carries the libc where
    it is not glibc: ``x64-musl``). Keys stay in lock and receipt file names on disk;
    users read this form only."""
    return key.replace("@", "/")


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
        sweep_partials(self)

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
        for sub in _FOLDERS:
            fd = nofollow.open_dir(self.root, (META, sub), create=True)
            try:
                if sub == "staging" and os.fstat(fd).st_mode & 0o077:
                    # Half-built entries and what sandboxes leave are no one else's to
                    # reach; a sandbox sees its own folder through its bind mount.
                    os.fchmod(fd, 0o700)
            finally:
                os.close(fd)

    def prepare(self) -> None:
        """What :meth:`open` does, every time: installs call it, since the volume may have
        been wiped (or the format changed) since this process first opened it."""
        try:
            self.open_folders()
        except nofollow.LinkRefused as exc:
            raise Unwritable(f"cannot prepare the store at {self.root}: {exc.strerror}") from exc
        except OSError as exc:
            raise Unwritable(
                f"cannot prepare the store at {self.root}: {exc.strerror}; check cache.root "
                "and that the volume is mounted writable for the agent"
            ) from exc
        self._sweep_partials()
        path = self.meta / "format"
        try:
            text = nofollow.read(path, 64).decode("ascii").strip()
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


_FOLDERS = ("locks", "receipts", "staging", "downloads")


PARTIAL_MAX_AGE = 3600.0
_OPENED: set[str] = set()


def sweep_partials(store: Store) -> int:
    """Remove ``.partial`` downloads untouched for :data:`PARTIAL_MAX_AGE`, walking the
    downloads folder by descriptor (a planted link is never entered); how many went."""
    now = time.time()
    removed = 0
    try:
        top = nofollow.open_dir(store.root, (META, "downloads"))
    except OSError:
        return 0
    try:
        for sub in nofollow.subdirs(top):
            with contextlib.suppress(OSError):
                fd = nofollow.open_below(top, (sub,))
                try:
                    for name in nofollow.names(fd):
                        if name.startswith(".") and name.endswith(".partial"):
                            removed += _unlink_old(fd, name, now)
                finally:
                    os.close(fd)
    finally:
        os.close(top)
    return removed


def _unlink_old(dirfd: int, name: str, now: float) -> int:
    try:
        if now - os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mtime > PARTIAL_MAX_AGE:
            os.unlink(name, dir_fd=dirfd)
            return 1
    except OSError:
        pass
    return 0


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, root: Path | None = None) -> None:
    """Write ``data`` to ``path`` via a unique temp file in the same folder, fsync, rename.

    The folder is reached from the store root without following links (``root``, else
    the root :func:`agent.store.nofollow.split` finds) and the temp file is created
    ``O_EXCL | O_NOFOLLOW`` relative to it: a link planted at the name or at any folder
    on the way is replaced or refused, never written through. The temp name is unique per
    call (threads and pods with equal PIDs share the volume) and removed on failure. The
    mode is set explicitly, whatever the agent's umask: runner and job containers read the
    store under other UIDs.
    """
    if root is not None:
        dirfd = nofollow.open_dir(root, path.parent.relative_to(root).parts)
    else:
        dirfd, _ = nofollow.open_parent(path)
    try:
        nofollow.write_atomic_at(dirfd, path.name, data, mode=mode)
    finally:
        os.close(dirfd)
