"""Removing entries: one at a time, safely, and least recently used first to a budget.

Policy:
- only entries the agent wrote (a receipt of their key exists) are ever removed; entries
  without a receipt (``actions/setup-*`` wrote them, or an operator) are not the agent's;
- a removal holds the entry's install lock, taken without waiting: an entry being
  installed (or removed by another agent) is skipped, never waited for;
- the marker goes first, so readers stop trusting the entry; then the in-use leases are
  read again, and if a job took one meanwhile the marker is put back and the entry kept;
  then the folder is renamed away (``.<leaf>.stale-*``, which any later install or
  ``cache gc`` sweeps), the receipt removed, and the renamed tree deleted. A process
  killed half-way leaves an unmarked folder, which readers ignore and the next install
  of that entry replaces;
- a removal works relative to the entry's ``<version>`` folder, opened from the store
  root one component at a time without following links (:mod:`agent.store.nofollow`);
  a ``<tool>`` or ``<version>`` that is a link is refused (:class:`Refused`) and nothing
  is removed: a link planted there could otherwise send the removal out of the store;
- eviction goes by last use (the receipt's mtime, see :mod:`agent.store.receipts`), oldest
  first, and skips entries with a live in-use lease in any pod (:mod:`agent.store.inuse`)
  and entries used in the last :data:`MIN_IDLE` seconds: a job may have looked an entry
  up a moment ago without a lease, and NFS clients may trust a cached marker that long;
- the download cache counts in the size (it is on the same volume) and goes first,
  least recently used first (its mtime; a cache hit touches it): an archive is only a
  re-download, an entry is a re-install. A download written or used in the last
  :data:`MIN_IDLE` seconds is kept, since an install may be about to extract it;
- sizes come from receipts (no tree walk) and one ``stat()`` per download; entries
  without a receipt are not counted, so a target below what foreign entries hold is
  reported as not reached.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ByteSize, TypeAdapter, ValidationError

from agent.store import inuse, inventory, layout, locks, nofollow, receipts

logger = logging.getLogger(__name__)

MIN_IDLE = 60.0
"""Seconds since its last use before an entry may be evicted."""

Outcome = Literal["removed", "in-use", "busy", "not-ours"]


class Refused(layout.StoreError):
    """A folder on the way to the entry (``<tool>`` or ``<version>``) is a link or not a
    folder: nothing was removed, and nothing will be until someone removes it by hand."""


def remove(
    store: layout.Store,
    entry: layout.Entry,
    *,
    backend: locks.LockBackend,
    why: str,
    respect_leases: bool = True,
    unreadable_receipt: bool = False,
) -> Outcome:
    """Remove one entry the agent wrote (marker first), or say why it was left alone;
    :class:`Refused` when a folder on the way is a link. With ``unreadable_receipt``, an
    entry whose receipt file exists but cannot be used (``bad-receipt``) counts as the
    agent's: its receipt file is the agent's own, whatever is in it now."""
    try:
        with backend.hold(entry.lock, what=f"removing {entry.display}", timeout=0):
            return _remove_locked(
                store,
                entry,
                why=why,
                respect_leases=respect_leases,
                unreadable_receipt=unreadable_receipt,
            )
    except locks.LockTimeout:
        return "busy"


def _leased(store: layout.Store, key: str) -> bool:
    live = inuse.live(store)
    return key in live or "*" in live


def _ours(entry: layout.Entry, *, unreadable_receipt: bool) -> bool:
    try:
        receipt = receipts.read(entry)
    except layout.StoreError:
        return unreadable_receipt
    if receipt is None:
        return False
    return receipt.key == entry.key or unreadable_receipt


def _remove_locked(
    store: layout.Store,
    entry: layout.Entry,
    *,
    why: str,
    respect_leases: bool,
    unreadable_receipt: bool,
) -> Outcome:
    if not _ours(entry, unreadable_receipt=unreadable_receipt):
        return "not-ours"
    if respect_leases and _leased(store, entry.key):
        return "in-use"
    # Everything below happens relative to the version folder, reached from the root one
    # component at a time without following links: a <tool> or <version> link (planted
    # before, or swapped in during the removal) cannot send the removal out of the store.
    try:
        vfd: int | None = nofollow.open_dir(entry.root, (entry.name, entry.version))
    except FileNotFoundError:
        vfd = None
    except OSError as exc:
        raise Refused(f"not removing {entry.display}: {exc.strerror}") from exc
    if vfd is None:  # a receipt left over: it goes alone
        _remove_receipt(entry)
        return "removed"
    try:
        return _remove_at(store, entry, vfd, why=why, respect_leases=respect_leases)
    finally:
        os.close(vfd)


def _remove_at(
    store: layout.Store, entry: layout.Entry, vfd: int, *, why: str, respect_leases: bool
) -> Outcome:
    marker = f"{entry.leaf}{inventory.MARKER}"
    had_marker = nofollow.exists_at(vfd, marker)
    if had_marker:
        nofollow.remove_at(vfd, marker)
        os.fsync(vfd)
        if respect_leases and _leased(store, entry.key):
            # A job took a lease between the first check and the marker's removal: it may
            # have looked the entry up already. Put the marker back, keep the entry.
            nofollow.write_atomic_at(vfd, marker, b"")
            return "in-use"
    folder = nofollow.exists_at(vfd, entry.leaf)
    if not had_marker and not folder:  # a receipt left over: it goes alone
        _remove_receipt(entry)
        return "removed"
    trash = f".{entry.leaf}.stale-{uuid.uuid4().hex[:8]}"
    if folder:
        os.rename(entry.leaf, trash, src_dir_fd=vfd, dst_dir_fd=vfd)
    _remove_receipt(entry)
    if folder:
        with contextlib.suppress(OSError):
            nofollow.remove_at(vfd, trash)  # what is left, gc sweeps
    with contextlib.suppress(OSError):
        os.fsync(vfd)
    logger.info("removed %s from the store: %s", entry.display, why, extra={"entry": entry.key})
    return "removed"


def _remove_receipt(entry: layout.Entry) -> None:
    dirfd, name = nofollow.open_parent(entry.receipt)
    try:
        nofollow.remove_at(dirfd, name)
    finally:
        os.close(dirfd)


class SizeError(ValueError):
    """A size that does not parse; the message names it and shows the expected form."""


_SIZE: TypeAdapter[ByteSize] | None = None


def human(size: int | None) -> str:
    """``1.5 GiB``, ``512 B``; ``-`` when unknown: how every message writes a size."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def parse_size(value: str | int) -> int:
    """Bytes from ``10GiB``, ``500MB``, ``1.5 GiB``, ``0`` or a plain number of bytes: the
    spellings ``cache.size_budget`` takes (GiB = 1024^3, GB = 1000^3)."""
    global _SIZE
    if _SIZE is None:
        _SIZE = TypeAdapter(ByteSize)
    if isinstance(value, bool):
        value = str(value)
    try:
        return int(_SIZE.validate_python(value.strip() if isinstance(value, str) else value))
    except ValidationError:
        raise SizeError(
            f"{value!r} is not a size; expected bytes (a number >= 0) or a number with a "
            "unit, e.g. 10GiB, 500MB or 0"
        ) from None


@dataclass
class Evicted:
    """The outcome of one eviction pass. Each of ``removed`` and ``skipped`` is a list of
    ``{"kind": "download" | "entry", "key", "entry", "size"[, "reason"]}``: ``key`` is the
    entry's lock and receipt name or the download's sha256, ``entry`` what users read."""

    target: int
    before: int
    after: int
    removed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        """Whether the store is now within the target."""
        return self.after <= self.target

    def to_data(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "reached": self.reached,
            "removed": self.removed,
            "skipped": self.skipped,
        }


def evict(
    store: layout.Store,
    *,
    to: int,
    backend: locks.LockBackend,
    min_idle: float = MIN_IDLE,
    now: float | None = None,
) -> Evicted:
    """Remove least recently used downloads, then entries, until the store's size (the
    receipts of complete entries plus the download cache) is at most ``to``."""
    if to < 0:
        raise layout.StoreError(f"eviction target {to} is negative; expected bytes >= 0")
    now = time.time() if now is None else now
    items = [i for i in inventory.scan(store) if i.state == "ok" and i.receipt is not None]
    archives = inventory.downloads(store)
    total = sum(i.size or 0 for i in items) + sum(d.size for d in archives)
    result = Evicted(target=to, before=total, after=total)
    why = f"evicted to {human(to)}"
    archives.sort(key=lambda d: (d.last_used, d.sha256))
    for download in archives:
        if total <= to:
            break
        note: dict[str, Any] = {
            "kind": "download",
            "key": download.sha256,
            "entry": download.display,
            "size": download.size,
        }
        if now - download.last_used < min_idle:
            reason = f"used {now - download.last_used:.0f} s ago (< {min_idle:g} s)"
            result.skipped.append({**note, "reason": reason})
        elif _remove_download(store, download):
            total -= download.size
            result.removed.append(note)
            logger.info("removed %s from the store: %s", download.display, why)
    items.sort(key=lambda i: (i.last_used or 0.0, i.key))
    for item in items:
        if total <= to:
            break
        note = {"kind": "entry", "key": item.key, "entry": item.display, "size": item.size}
        skip = ""
        if item.in_use:
            skip = "in use by " + ", ".join(lease.describe() for lease in item.in_use)
        elif item.last_used is not None and now - item.last_used < min_idle:
            skip = f"used {now - item.last_used:.0f} s ago (< {min_idle:g} s)"
        else:
            try:
                outcome = remove(store, item.entry, backend=backend, why=why)
            except Refused as exc:
                result.skipped.append({**note, "reason": str(exc)})
                continue
            if outcome == "removed":
                total -= item.size or 0
                result.removed.append(note)
                continue
            skip = {
                "in-use": "in use (a lease appeared)",
                "busy": "being installed or removed",
                "not-ours": "its receipt vanished",
            }[outcome]
        result.skipped.append({**note, "reason": skip})
    result.after = total
    return result


def _remove_download(store: layout.Store, download: inventory.Download) -> bool:
    """Unlink one archive, relative to its folder reached without following links; an
    install that has it open keeps reading it. False when it was gone already."""
    try:
        fd = nofollow.open_dir(store.root, (layout.META, "downloads", download.sha256[:2]))
    except OSError:
        return False
    try:
        os.unlink(download.sha256, dir_fd=fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
