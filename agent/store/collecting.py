"""Garbage collection of the store: what dead installs, evictions and jobs left behind.

Policy:
- gc removes staging folders whose entry lock is free (an install holds the lock while it
  stages, so a free lock means its process died), the renamed-away trash of killed
  publishes and evictions (same rule), ``.partial`` downloads untouched for an hour,
  lapsed in-use leases, and downloaded archives no receipt names any more (untouched for
  :data:`DOWNLOAD_GRACE`, so an install between its download and its publish keeps its
  archive; if any receipt cannot be read, every download is kept). It keeps staging
  folders of running installs, and anything whose name it does not recognise;
- every folder is reached by descriptor from the store root and every removal is
  relative to it (:mod:`agent.store.nofollow`): a link planted in the store is never
  entered, and a receipt that cannot be read (a link, a fifo, garbage) keeps every
  download instead of failing the pass.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.store import inuse, layout, locks, nofollow, publishing, receipts

_STAGED = re.compile(r"^(?P<key>[^@/]+@[^@/]+@[^@/]+)\.[0-9a-f]{32}$")


@dataclass
class Collected:
    """What one gc pass removed and kept."""

    staging_removed: list[str] = field(default_factory=list)
    staging_kept: list[str] = field(default_factory=list)
    """Staging folders of installs still running (their entry lock is held)."""
    partials_removed: int = 0
    leases_removed: int = 0
    downloads_removed: int = 0
    download_bytes_removed: int = 0
    unknown: list[str] = field(default_factory=list)
    """Names in the staging folder the agent does not recognise (left alone)."""

    def to_data(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "staging_removed": self.staging_removed,
            "staging_kept": self.staging_kept,
            "partials_removed": self.partials_removed,
            "leases_removed": self.leases_removed,
            "downloads_removed": self.downloads_removed,
            "download_bytes_removed": self.download_bytes_removed,
            "unknown": self.unknown,
        }


def gc(store: layout.Store, *, backend: locks.LockBackend) -> Collected:
    """Collect garbage (see the module's policy); the caller holds the janitor lock."""
    result = Collected()
    keys: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        fd = nofollow.open_dir(store.root, (layout.META, "staging"))
        try:
            for name in nofollow.names(fd):
                match = _STAGED.match(name)
                if match is None:
                    result.unknown.append(name)
                else:
                    keys.setdefault(match["key"], []).append(name)
        finally:
            os.close(fd)
    for name, version, child in _trash(store):  # trash beside entries: .<leaf>.stale-*
        leaf, _, _ = child[1:].partition(".stale-")
        keys.setdefault(f"{name}@{version}@{leaf}", [])
    for key, staged in sorted(keys.items()):
        try:
            entry = store.entry(*key.split("@"))
            with backend.hold(entry.lock, what=f"collecting {entry.display}", timeout=0):
                publishing.sweep(store, entry)
            result.staging_removed += staged
        except locks.LockTimeout:
            result.staging_kept += staged
        except layout.StoreError:
            result.unknown += staged
    now = time.time()
    result.partials_removed = layout.sweep_partials(store)
    result.leases_removed = inuse.sweep(store, now=now)
    result.downloads_removed, result.download_bytes_removed = _unreferenced_downloads(store, now)
    return result


_PASSING = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EIO, errno.EAGAIN, errno.EINTR}
)
"""Read errors that say nothing about the receipt itself."""

DOWNLOAD_GRACE = 3600.0
"""Seconds an unreferenced download is kept after its last write (an install in flight)."""


def _unreferenced_downloads(store: layout.Store, now: float) -> tuple[int, int]:
    """Remove downloaded archives that no receipt names; (files, bytes) removed."""
    referenced: set[str] = set()
    try:
        names = _receipt_names(store)
    except layout.StoreError:
        return 0, 0  # what is in use is unknown: keep every download
    for key in names:
        try:
            receipt = receipts.read_file(store.meta / "receipts" / key)
        except layout.StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno in _PASSING:
                return 0, 0  # a read that may work next time: keep every download now
            # A receipt that is bad for good (reported as bad-receipt elsewhere): its
            # archives are only a re-download, and keeping every download for one bad
            # file let them grow without bound.
            continue
        if receipt is not None:
            referenced.update(source.sha256 for source in receipt.sources)
    removed = size = 0
    try:
        top = nofollow.open_dir(store.root, (layout.META, "downloads"))
    except OSError:
        return 0, 0
    try:
        for sub in nofollow.subdirs(top):
            if len(sub) != 2:
                continue
            with contextlib.suppress(OSError):
                fd = nofollow.open_below(top, (sub,))
                try:
                    for name in nofollow.names(fd):
                        if name.startswith(".") or len(name) != 64 or name in referenced:
                            continue
                        with contextlib.suppress(OSError):
                            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                            if now - st.st_mtime >= DOWNLOAD_GRACE:
                                nofollow.remove_at(fd, name)
                                removed += 1
                                size += st.st_size
                finally:
                    os.close(fd)
    finally:
        os.close(top)
    return removed, size


def _receipt_names(store: layout.Store) -> list[str]:
    try:
        fd = nofollow.open_dir(store.root, (layout.META, "receipts"))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise receipts.BadReceipt(f"cannot list the receipts: {exc.strerror}") from exc
    try:
        return [n for n in nofollow.names(fd) if n.endswith(".json") and n[0] != "."]
    finally:
        os.close(fd)


def _trash(store: layout.Store) -> Iterator[tuple[str, str, str]]:
    """``(tool, version, name)`` of every ``.<leaf>.stale-*`` beside entries, reached by
    descriptor through real folders only."""
    try:
        top = nofollow.open_root(store.root)
    except OSError:
        return
    try:
        for name in _dirs(top):
            try:
                tool = nofollow.open_below(top, (name,))
            except OSError:
                continue
            try:
                for version in _dirs(tool):
                    with contextlib.suppress(OSError):
                        fd = nofollow.open_below(tool, (version,))
                        try:
                            children = nofollow.names(fd)
                        finally:
                            os.close(fd)
                        for child in children:
                            if child.startswith(".") and ".stale-" in child:
                                yield name, version, child
            finally:
                os.close(tool)
    finally:
        os.close(top)


def _dirs(dirfd: int) -> list[str]:
    try:
        return [n for n in nofollow.subdirs(dirfd) if n[0] != "."]
    except OSError:
        return []
