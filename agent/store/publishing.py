"""Publishing a staged entry: fsync, rename into place, receipt, then marker.

Policy: the marker is written last and is the only thing readers trust, so a process
killed at any point leaves either nothing at the final path or an unmarked folder that
the next install (holding the lock) takes away. Nothing is ever built through a symlink:
the entry's folders are reached by descriptor from the store root
(:mod:`agent.store.nofollow`), and every rename and write is relative to them.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from pathlib import Path

from agent.store import layout, nofollow, receipts


def sweep(store: layout.Store, entry: layout.Entry) -> None:
    """Remove what killed installs of this entry left behind (the caller holds its lock).
    Both folders are reached by descriptor; a link on the way is left alone."""
    with contextlib.suppress(OSError):
        fd = nofollow.open_dir(store.root, (layout.META, "staging"))
        try:
            _remove_prefixed(fd, f"{entry.key}.")
        finally:
            os.close(fd)
    with contextlib.suppress(OSError):
        fd = nofollow.open_dir(entry.root, (entry.name, entry.version))
        try:
            _remove_prefixed(fd, f".{entry.leaf}.stale-")
        finally:
            os.close(fd)


def _remove_prefixed(dirfd: int, prefix: str) -> None:
    for name in nofollow.names(dirfd):
        if name.startswith(prefix):
            with contextlib.suppress(OSError):
                nofollow.remove_at(dirfd, name)


_TOP = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def normalize_modes(tree: Path) -> int:
    """Give every folder 0755 and every file 0755 (any execute bit) or 0644, links aside,
    as extraction does: the store is shared by every job on the volume, so nothing in it
    may be writable by anyone but the agent (a tool one job could rewrite is a tool every
    later job runs), carry set-id bits, or be unreadable to the runner's user (whatever
    the umask of the agent or of the tool that wrote it). Returns how many changed.

    The tree is walked by descriptor and each mode is changed through a descriptor opened
    without following a link, checked to be what was listed: a file swapped for a link
    after the listing is never the one changed."""
    top = os.open(tree, _TOP)
    try:
        changed = _normalize(top, ".", os.fstat(top))
        for _, dirs, names, fd in nofollow.walk(top):
            for name in [*dirs, *names]:
                with contextlib.suppress(FileNotFoundError):
                    changed += _normalize(fd, name, os.stat(name, dir_fd=fd, follow_symlinks=False))
    finally:
        os.close(top)
    return changed


def _normalize(dirfd: int, name: str, st: os.stat_result) -> int:
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return 0  # links keep theirs; nothing else belongs in an entry
    want = 0o755 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111 else 0o644
    if stat.S_IMODE(st.st_mode) == want:
        return 0
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
    except PermissionError:
        # Not root, and the file is unreadable to its owner: the folder is the agent's
        # (walked by descriptor), so only its own file can be at the name.
        os.chmod(name, want, dir_fd=dirfd)
        return 1
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise layout.StoreError(f"{name} changed while its mode was normalised")
        os.fchmod(fd, want)
    finally:
        os.close(fd)
    return 1


def fsync_tree(tree: Path) -> None:
    """fsync every file and folder of ``tree``, so a rename publishes durable data
    (walked by descriptor; links are not followed)."""
    top = os.open(tree, _TOP)
    try:
        for _, _, names, dirfd in nofollow.walk(top):
            for name in names:
                with contextlib.suppress(nofollow.LinkRefused):
                    fd = nofollow.open_file(dirfd, name, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            os.fsync(dirfd)
    finally:
        os.close(top)


def _folder(dirfd: int, name: str, where: Path) -> int:
    """The real folder ``name`` below ``dirfd``, made 0755 (whatever the umask) if missing;
    a link there is refused."""
    try:
        return nofollow.open_below(dirfd, (name,), at=str(where))
    except FileNotFoundError:
        pass
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=dirfd)
    fd = nofollow.open_below(dirfd, (name,), at=str(where))
    os.fchmod(fd, 0o755)  # readable by the runner's UID
    os.fsync(dirfd)
    return fd


def publish(entry: layout.Entry, tree: Path, receipt: receipts.Receipt, *, staging: Path) -> None:
    """Move the staged ``tree`` to the entry's path and mark it complete."""
    # Refuse to build through symlinks: a link at <root>/<name> would send the entry
    # (and a later rmtree) somewhere else entirely. Everything from here on is relative
    # to descriptors of real folders, so a link swapped in later changes nothing.
    try:
        rootfd = nofollow.open_root(entry.root)
        try:
            toolfd = _folder(rootfd, entry.name, entry.root)
        finally:
            os.close(rootfd)
        try:
            vfd = _folder(toolfd, entry.version, entry.root / entry.name)
        finally:
            os.close(toolfd)
    except nofollow.LinkRefused as exc:
        raise layout.StoreError(str(exc.strerror)) from exc
    try:
        _publish_at(vfd, entry, tree, receipt, staging=staging)
    finally:
        os.close(vfd)


def _publish_at(
    vfd: int, entry: layout.Entry, tree: Path, receipt: receipts.Receipt, *, staging: Path
) -> None:
    marker = f"{entry.leaf}.complete"
    if nofollow.exists_at(vfd, marker):
        raise layout.StoreError(f"{entry.marker} appeared during the install; not replacing it")
    sfd, staged = nofollow.open_parent(tree)
    try:
        if not stat.S_ISDIR(os.stat(staged, dir_fd=sfd, follow_symlinks=False).st_mode):
            raise layout.StoreError(f"{tree} is not a folder; not publishing it")
        # The receipt first: nothing trusts it without the marker, and a failure writing
        # it leaves nothing at the final path.
        receipts.write(entry, receipt)
        if nofollow.exists_at(vfd, entry.leaf):
            # Published by a process that died before its marker: nobody trusts it, and
            # the lock is ours, so it goes (renamed away first, so the final path is never
            # half deleted).
            trash = f".{entry.leaf}.stale-{uuid.uuid4().hex[:8]}"
            os.rename(entry.leaf, trash, src_dir_fd=vfd, dst_dir_fd=vfd)
            with contextlib.suppress(OSError):
                nofollow.remove_at(vfd, trash)
        os.rename(staged, entry.leaf, src_dir_fd=sfd, dst_dir_fd=vfd)
    finally:
        os.close(sfd)
    try:
        os.fsync(vfd)
        # Staging goes before the marker: a process killed after its marker leaves no
        # leftovers, and one killed before it is swept by the next install anyway.
        nofollow.remove_path(staging)
        nofollow.write_atomic_at(vfd, marker, b"")
    except BaseException:
        # No marker: take the tree back out, so a failure leaves nothing at the final path.
        trash = f".{entry.leaf}.stale-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(OSError):
            os.rename(entry.leaf, trash, src_dir_fd=vfd, dst_dir_fd=vfd)
            nofollow.remove_at(vfd, trash)
        raise
