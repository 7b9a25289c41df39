"""What the store holds: entries from receipts and markers, and a cheap running total.

Policy:
- sizes come from receipts (written at publish time), never from walking an entry's
  tree: a scrape or a listing of a store on NFS with 100k files must not read them all.
  ``cache verify`` walks the trees and reconciles the two;
- a listing reads three folder levels (``<name>/<version>/<leaf>``) plus the receipts
  folder and stats each receipt, marker and folder; nothing inside an entry;
- an entry is ``ok`` only with its marker, its folder and a receipt naming its key. Every
  other combination is listed with a state that says what is wrong, and who wrote it:
  entries without a receipt were written by someone else (``actions/setup-*`` itself,
  an operator) and are never the agent's to delete;
- :class:`Tally` keeps the bytes and entries of ``ok``-by-marker entries up to date by
  re-reading only receipts that changed since the last refresh (a new inode or size), so
  a refresh of 10,000 entries is four ``stat()`` calls each (the receipt, and the
  marker through real folders only) and :meth:`Tally.snapshot`,
  what ``/metrics`` reads, costs nothing;
- the download cache (``.runner-agent/downloads/<xx>/<sha256>``, archives kept for a
  re-install) holds bytes on the same volume, so it counts in the store's size: the
  running total, listings and the budget eviction compares against. A download is sized
  and dated by one ``stat()`` (its mtime is its last use: a cache hit touches it).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.store import inuse, layout, nofollow, receipts

State = Literal["ok", "no-receipt", "no-entry", "unmarked", "orphan", "receipt-only", "bad-receipt"]
STATES: tuple[State, ...] = (
    "ok",
    "no-receipt",
    "no-entry",
    "unmarked",
    "orphan",
    "receipt-only",
    "bad-receipt",
)
MARKER = ".complete"


@dataclass
class Item:
    """One entry (or what is left of one) as found on disk."""

    entry: layout.Entry
    state: State
    marker: bool
    folder: bool
    receipt: receipts.Receipt | None = None
    problem: str = ""
    last_used: float | None = None
    in_use: list[inuse.Lease] = field(default_factory=list)

    @property
    def key(self) -> str:
        """``name@version@leaf``: the name in lock and receipt files."""
        return self.entry.key

    @property
    def display(self) -> str:
        """``name/version/leaf``: the name users read."""
        return self.entry.display

    @property
    def size(self) -> int | None:
        """Bytes, from the receipt; ``None`` without one (never measured here)."""
        return self.receipt.size if self.receipt is not None else None

    @property
    def target(self) -> str:
        """``os/arch[/libc]`` of the receipt's platform, or ``""``."""
        platform = self.receipt.platform if self.receipt is not None else {}
        parts = [platform.get("os"), platform.get("arch"), platform.get("libc")]
        return "/".join(str(p) for p in parts if p)

    @property
    def agent_wrote(self) -> bool:
        """Whether the agent wrote it (a receipt of this key exists), so it may remove it."""
        return self.receipt is not None

    def to_data(self) -> dict[str, Any]:
        """JSON-ready data for listings."""
        r = self.receipt
        return {
            "key": self.key,
            "entry": self.display,
            "name": self.entry.name,
            "version": self.entry.version,
            "leaf": self.entry.leaf,
            "path": str(self.entry.path),
            "state": self.state,
            "problem": self.problem,
            "feature": r.feature if r else None,
            "feature_version": r.version if r else None,
            "method": r.method if r else None,
            "target": self.target,
            "size": self.size,
            "last_used": self.last_used,
            "in_use": [
                {"agent": lease.agent, "job": lease.job, "expires": lease.expires}
                for lease in self.in_use
            ],
        }


def scan(store: layout.Store, *, with_leases: bool = True) -> list[Item]:
    """Every entry, marker, receipt and orphan folder of the store, sorted by key.

    Folders are listed by descriptor from the root down, links never entered: a
    ``<tool>`` or ``<version>`` link is not a folder of the store, and an entry whose
    receipt names a path through one is ``receipt-only``."""
    found: dict[str, Item] = {}
    try:
        top = nofollow.open_root(store.root)
    except OSError:
        top = None
    if top is not None:
        try:
            _scan_tree(store, top, found)
        finally:
            os.close(top)
    for key in _receipt_keys(store):
        name, version, leaf = key.split("@")
        try:
            entry = store.entry(name, version, leaf)
        except layout.StoreError:
            continue
        found.setdefault(key, Item(entry, "receipt-only", False, False))
    live = inuse.live(store) if with_leases else {}
    everyone = live.get("*", [])
    items = []
    for key in sorted(found):
        item = found[key]
        _classify(item)
        item.in_use = live.get(key, []) + everyone
        items.append(item)
    return items


def _scan_tree(store: layout.Store, top: int, found: dict[str, Item]) -> None:
    for name in _dirs(top):
        for version, base in _opened(top, name):
            try:
                for child in nofollow.names(base):
                    if child.startswith("."):
                        continue  # trash of an eviction or a killed publish, left to gc
                    _note(store, found, base, name, version, child)
            except OSError:
                continue
            finally:
                os.close(base)


def _opened(top: int, name: str) -> Iterator[tuple[str, int]]:
    """``(version, descriptor)`` of each version folder of ``name`` (the caller closes)."""
    try:
        tool = nofollow.open_below(top, (name,))
    except OSError:
        return
    try:
        for version in _dirs(tool):
            try:
                yield version, nofollow.open_below(tool, (version,))
            except OSError:
                continue
    finally:
        os.close(tool)


def _note(
    store: layout.Store, found: dict[str, Item], base: int, name: str, version: str, child: str
) -> None:
    is_marker = child.endswith(MARKER)
    leaf = child[: -len(MARKER)] if is_marker else child
    is_folder = not is_marker and _is_dir(base, child)
    if not (is_marker or is_folder):
        return  # a stray file, not an entry's
    try:
        entry = store.entry(name, version, leaf)
    except layout.StoreError:
        return  # a name the agent could not have written
    item = found.setdefault(entry.key, Item(entry, "orphan", False, False))
    item.marker = item.marker or is_marker
    item.folder = item.folder or is_folder


def _classify(item: Item) -> None:
    entry = item.entry
    try:
        item.receipt = receipts.read(entry)
        if item.receipt is not None and item.receipt.key != entry.key:
            item.problem = f"its receipt names {layout.display(item.receipt.key)!r}"
            item.receipt = None
            item.state = "bad-receipt"
    except layout.StoreError as exc:
        item.state, item.problem = "bad-receipt", str(exc)
    if item.receipt is not None:
        item.last_used = receipts.last_used(entry)
    elif item.marker:
        try:
            item.last_used = entry.marker.lstat().st_mtime
        except OSError:
            item.last_used = None
    if item.state == "bad-receipt":
        return
    has_receipt = item.receipt is not None
    if item.marker and item.folder:
        item.state = "ok" if has_receipt else "no-receipt"
        if not has_receipt:
            item.problem = "no receipt: written by someone else; never removed by the agent"
    elif item.marker:
        item.state, item.problem = "no-entry", "a marker without its entry folder"
    elif item.folder:
        if has_receipt:
            item.state = "unmarked"
            item.problem = "no marker (an install died before it); the next install replaces it"
        else:
            item.state, item.problem = "orphan", "a folder with neither marker nor receipt"
    else:
        item.state, item.problem = "receipt-only", "a receipt without entry or marker"


def _is_dir(dirfd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _dirs(dirfd: int) -> list[str]:
    try:
        return [n for n in nofollow.subdirs(dirfd) if not n.startswith(".")]
    except OSError:
        return []


def _receipt_keys(store: layout.Store) -> list[str]:
    try:
        dirfd = nofollow.open_dir(store.root, (layout.META, "receipts"))
    except OSError:
        return []
    try:
        names = nofollow.names(dirfd)
    except OSError:
        return []
    finally:
        os.close(dirfd)
    keys = []
    for name in names:
        if name.startswith(".") or not name.endswith(".json"):
            continue
        key = name[: -len(".json")]
        if key.count("@") == 2:
            keys.append(key)
    return keys


@dataclass(frozen=True)
class Download:
    """One archive of the download cache."""

    sha256: str
    size: int
    last_used: float
    """Its mtime: written when downloaded, touched on every cache hit."""

    @property
    def display(self) -> str:
        """``download 1a2b3c4d5e6f``: what users read (the digest's first 12 digits)."""
        return f"download {self.sha256[:12]}"

    def to_data(self) -> dict[str, Any]:
        """JSON-ready data for listings."""
        return {
            "sha256": self.sha256,
            "entry": self.display,
            "size": self.size,
            "last_used": self.last_used,
        }


def downloads(store: layout.Store) -> list[Download]:
    """Every complete archive of the download cache, by descriptor from the store root
    (a link planted there is never entered; ``.partial`` files are not counted)."""
    found = []
    try:
        top = nofollow.open_dir(store.root, (layout.META, "downloads"))
    except OSError:
        return []
    try:
        for sub in nofollow.subdirs(top):
            if len(sub) != 2 or sub.startswith("."):
                continue
            try:
                fd = nofollow.open_below(top, (sub,))
            except OSError:
                continue
            try:
                for name in nofollow.names(fd):
                    if name.startswith(".") or len(name) != 64 or not name.startswith(sub):
                        continue
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        found.append(Download(name, st.st_size, st.st_mtime))
            except OSError:
                continue
            finally:
                os.close(fd)
    except OSError:
        return found
    finally:
        os.close(top)
    return sorted(found, key=lambda d: d.sha256)


@dataclass(frozen=True)
class Totals:
    """The store's size: receipts of complete entries, plus the download cache."""

    bytes: int = 0
    """Everything counted: ``entry_bytes + download_bytes`` (what the budget compares)."""
    entries: int = 0
    refreshed: float | None = None
    """Unix time of the last refresh; ``None`` before the first."""
    entry_bytes: int = 0
    downloads: int = 0
    download_bytes: int = 0

    def to_data(self) -> dict[str, int]:
        """JSON-ready data (``refreshed`` aside)."""
        return {
            "bytes": self.bytes,
            "entries": self.entries,
            "entry_bytes": self.entry_bytes,
            "downloads": self.downloads,
            "download_bytes": self.download_bytes,
        }


def totals(items: list[Item], archives: list[Download]) -> Totals:
    """What a listing adds up to: ``ok`` entries by receipt, and every download."""
    ok = [i for i in items if i.state == "ok"]
    entry_bytes = sum(i.size or 0 for i in ok)
    download_bytes = sum(d.size for d in archives)
    return Totals(
        bytes=entry_bytes + download_bytes,
        entries=len(ok),
        refreshed=time.time(),
        entry_bytes=entry_bytes,
        downloads=len(archives),
        download_bytes=download_bytes,
    )


class Tally:
    """A running total of the store's size, refreshed from receipts that changed and one
    ``stat()`` per download."""

    def __init__(self, store: layout.Store) -> None:
        self.store = store
        self._sizes: dict[str, tuple[int, int, int]] = {}
        """receipt file name -> (inode, file size, size the receipt records)"""
        self._totals = Totals()
        self._lock = threading.Lock()

    def snapshot(self) -> Totals:
        """The last refreshed totals (no I/O)."""
        return self._totals

    def refresh(self) -> Totals:
        """Re-read what changed; receipts without a marker (or folder) are not counted.
        A receipt that cannot be read or used is skipped, never fatal: the good ones are
        still counted."""
        with self._lock:
            folder = self.store.meta / "receipts"
            try:
                dirfd = nofollow.open_dir(self.store.root, (layout.META, "receipts"))
            except OSError:
                dirfd = None
            try:
                names = [] if dirfd is None else nofollow.names(dirfd)
                seen: dict[str, tuple[int, int, int]] = {}
                total = count = 0
                for name in names:
                    key = name[: -len(".json")]
                    if not name.endswith(".json") or name[0] == "." or key.count("@") != 2:
                        continue
                    assert dirfd is not None
                    size = self._size_of(dirfd, folder, name)
                    if size is None:
                        continue
                    seen[name] = size
                    if not self._marked(*key.split("@")):
                        continue
                    total += size[2]
                    count += 1
            finally:
                if dirfd is not None:
                    os.close(dirfd)
            self._sizes = seen
            archives = downloads(self.store)
            download_bytes = sum(d.size for d in archives)
            self._totals = Totals(
                bytes=total + download_bytes,
                entries=count,
                refreshed=time.time(),
                entry_bytes=total,
                downloads=len(archives),
                download_bytes=download_bytes,
            )
            return self._totals

    def _marked(self, name: str, version: str, leaf: str) -> bool:
        """Whether ``<name>/<version>/<leaf>.complete`` is there, through real folders
        only (three ``lstat`` calls: a metric, so a race here is only a stale count)."""
        root = self.store.root
        try:
            for path in (root / name, root / name / version):
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    return False
            os.lstat(root / name / version / f"{leaf}{MARKER}")
        except OSError:
            return False
        return True

    def _size_of(self, dirfd: int, folder: Path, name: str) -> tuple[int, int, int] | None:
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except OSError:
            return None
        known = self._sizes.get(name)
        if known is not None and known[:2] == (st.st_ino, st.st_size):
            return known
        try:
            raw = nofollow.read_at(dirfd, name, receipts.MAX_BYTES, at=str(folder))
            receipt = receipts.Receipt.from_json(raw)
        except (OSError, layout.StoreError):
            return None
        return (st.st_ino, st.st_size, receipt.size)
