"""Entries that are ready: the warm path every ensure takes first.

Policy: an entry is ready when its ``.complete`` marker exists and its receipt names it
(see :mod:`agent.store.layout`); once verified, it is trusted for as long as its marker
is the same file, so a hit costs two ``stat()`` calls. A marker whose receipt cannot be
used is an error, never a miss: the entry may be in use, so it is reported and left
alone. Receipts keep the entry's own path as :data:`PREFIX_VAR`, so an entry works
wherever the volume is mounted.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from agent.platform import plans as wire
from agent.store import layout, receipts

PREFIX_VAR = "${prefix}"
"""Stands for the entry's folder in a receipt's variables."""


def entry_of(store: layout.Store, prefix: str) -> layout.Entry:
    """The entry a plan step's ``prefix`` (``<root>/<tool>/<version>/<arch>``) names."""
    path = Path(prefix)
    return store.entry(path.parent.parent.name, path.parent.name, path.name)


def exported(installed: Installed) -> tuple[list[str], dict[str, str]]:
    """The PATH entries and variables of a ready entry, absolute for this mount point."""
    root = str(installed.entry.path)
    path = [
        os.path.normpath(os.path.join(root, rel)) for rel in installed.receipt.env.get("path", [])
    ]
    env = {
        name: value.replace(PREFIX_VAR, root)
        for name, value in installed.receipt.env.get("vars", {}).items()
    }
    return path, env


@dataclass(frozen=True)
class Installed:
    """An entry that is ready."""

    entry: layout.Entry
    receipt: receipts.Receipt
    cached: bool


_verified: dict[str, tuple[tuple[int, int, int], receipts.Receipt]] = {}


def marker_id(entry: layout.Entry) -> tuple[int, int, int] | None:
    """The marker's identity (device, inode, mtime), or ``None`` when there is none."""
    try:
        st = os.stat(entry.marker)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def lookup(entry: layout.Entry, *, feature: str, version: str) -> receipts.Receipt | None:
    """The receipt of a complete entry of ``feature`` at ``version``, or ``None`` if absent.

    Verified state is cached in the process: once an entry's marker and receipt agree,
    the entry is trusted for as long as its marker is the same file (device, inode and
    mtime unchanged) and its folder exists; a hit costs two ``stat()`` calls. An entry
    replaced elsewhere gets a new marker and is verified again. On NFS, attribute caching
    can serve a removed entry for up to ``acregmax`` seconds: eviction (a later feature)
    must leave that grace.

    A marker whose receipt cannot be read, or names another feature, is an error, never
    a miss: the entry may be in use, so it is reported and left alone.
    """
    marker = marker_id(entry)
    if marker is None:
        _verified.pop(entry.key, None)
        return None
    cached = _verified.get(entry.key)
    if cached is not None and cached[0] == marker:
        known = cached[1]
        if known.feature == feature and known.version == version and entry.path.is_dir():
            return known
    _no_links_on_the_way(entry)
    try:
        receipt = receipts.read(entry)
    except layout.StoreError as exc:
        raise layout.StoreError(
            f"{entry.display} has a marker but its receipt cannot be used ({exc}); the entry is "
            "left alone: `runner-agent cache verify --repair` removes it (the next ensure "
            f"installs it again), or fix {entry.receipt} by hand"
        ) from exc
    if receipt is None or receipt.key != entry.key or not entry.path.is_dir():
        raise layout.StoreError(
            f"{entry.display} has a marker but no matching receipt or folder; the entry is left "
            f"alone: remove {entry.marker} to have it installed again"
        )
    if receipt.feature != feature or receipt.version != version:
        raise layout.StoreError(
            f"{entry.display} holds {receipt.feature} {receipt.version}, not {feature} {version}: "
            "two features share a tool cache name; give one another toolcache_name"
        )
    _verified[entry.key] = (marker, receipt)
    return receipt


def _no_links_on_the_way(entry: layout.Entry) -> None:
    """Refuse an entry reached through a link (``<tool>``, ``<version>`` or the entry
    folder itself): it is not the store's, and a job must not be handed a path out of
    it. Checked when an entry is verified, not on every hit."""
    for path in (entry.path.parent.parent, entry.path.parent, entry.path):
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return  # gone: the checks after this one say so
        if stat.S_ISLNK(mode):
            raise layout.StoreError(
                f"{path} is a symlink; the store only holds real folders, so {entry.display} "
                "is left alone: remove the link by hand (someone who can write the store "
                "planted it)"
            )


def find(store: layout.Store, step: wire.ToolStep) -> Installed | None:
    """The step's entry when it is already complete (the warm path), else ``None``."""
    entry = entry_of(store, step["prefix"])
    found = lookup(entry, feature=step["id"], version=step["version"])
    if found is None or not_as_locked(step, found):
        return None  # not as the lock pins it: the install says so (agent.install.protocol)
    receipts.touch(entry)
    return Installed(entry, found, cached=True)


def not_as_locked(step: wire.ToolStep, found: receipts.Receipt) -> list[str]:
    """The sha256 digests a lock file pins for ``step`` that the entry's receipt does not
    name as its sources (an entry is shared, and may have been made, from the catalog,
    after the upstream changed what it serves); empty for a step no lock pins."""
    wanted = pinned(step)
    if not wanted:
        return []
    have = {s.sha256 for s in found.sources}
    return [p for p in wanted if p not in have]


def pinned(step: wire.ToolStep) -> list[str]:
    """The sha256 digests a lock file pins for ``step`` (none for a step no lock pins)."""
    found = [a["sha256"] for a in step["actions"] if a["action"] == "download" and a.get("locked")]
    found += [
        a["manifest_sha256"]
        for a in step["actions"]
        if a["action"] == "components" and "manifest_sha256" in a
    ]
    return found
