"""Publishing a staged entry: fsync, rename into place, receipt, then marker.

Policy: the marker is written last and is the only thing readers trust, so a process
killed at any point leaves either nothing at the final path or an unmarked folder that
the next install (holding the lock) takes away. Nothing is ever built through a symlink.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from pathlib import Path

from agent.store import layout, receipts


def sweep(store: layout.Store, entry: layout.Entry) -> None:
    """Remove what killed installs of this entry left behind (the caller holds its lock)."""
    for stale in store.staging.glob(f"{entry.key}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    parent = entry.path.parent
    for trash in parent.glob(f".{entry.leaf}.stale-*") if parent.is_dir() else ():
        if trash.is_symlink():
            trash.unlink(missing_ok=True)
        else:
            shutil.rmtree(trash, ignore_errors=True)


def normalize_modes(tree: Path) -> int:
    """Give every folder 0755 and every file 0755 (any execute bit) or 0644, links aside,
    as extraction does: the store is shared by every job on the volume, so nothing in it
    may be writable by anyone but the agent (a tool one job could rewrite is a tool every
    later job runs), carry set-id bits, or be unreadable to the runner's user (whatever
    the umask of the agent or of the tool that wrote it). Returns how many changed."""
    changed = 0
    for folder, dirs, files in os.walk(tree):
        for name in [".", *dirs, *files] if folder == str(tree) else [*dirs, *files]:
            path = os.path.normpath(os.path.join(folder, name))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            executable = stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111
            want = 0o755 if executable else 0o644
            if stat.S_IMODE(st.st_mode) != want:
                os.chmod(path, want)
                changed += 1
    return changed


def fsync_tree(tree: Path) -> None:
    """fsync every file and folder of ``tree``, so a rename publishes durable data."""
    for folder, _, files in os.walk(tree):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        layout.fsync_dir(Path(folder))


def publish(entry: layout.Entry, tree: Path, receipt: receipts.Receipt, *, staging: Path) -> None:
    """Move the staged ``tree`` to the entry's path and mark it complete."""
    # Refuse to build through symlinks: a link at <root>/<name> would send the entry
    # (and a later rmtree) somewhere else entirely.
    for part in (entry.path.parent.parent, entry.path.parent):
        if part.is_symlink():
            raise layout.StoreError(f"{part} is a symlink; the store only holds real folders")
        if not part.exists():
            part.mkdir(mode=0o755)
            os.chmod(part, 0o755)  # noqa: S103 - readable by the runner's UID
            layout.fsync_dir(part.parent)
    if entry.marker.exists():
        raise layout.StoreError(f"{entry.marker} appeared during the install; not replacing it")
    # The receipt first: nothing trusts it without the marker, and a failure writing it
    # leaves nothing at the final path.
    receipts.write(entry, receipt)
    if entry.path.exists() or entry.path.is_symlink():
        # Published by a process that died before its marker: nobody trusts it, and the
        # lock is ours, so it goes (renamed away first, so the final path is never half
        # deleted).
        trash = entry.path.with_name(f".{entry.path.name}.stale-{uuid.uuid4().hex[:8]}")
        os.rename(entry.path, trash)
        if trash.is_symlink():
            trash.unlink()
        else:
            shutil.rmtree(trash, ignore_errors=True)
    os.rename(tree, entry.path)
    try:
        layout.fsync_dir(entry.path.parent)
        # Staging goes before the marker: a process killed after its marker leaves no
        # leftovers, and one killed before it is swept by the next install anyway.
        shutil.rmtree(staging, ignore_errors=True)
        layout.write_atomic(entry.marker, b"")
    except BaseException:
        # No marker: take the tree back out, so a failure leaves nothing at the final path.
        trash = entry.path.with_name(f".{entry.path.name}.stale-{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(OSError):
            os.rename(entry.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        raise
