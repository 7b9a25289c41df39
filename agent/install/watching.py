"""What a step may take from the store's volume: a size limit, watched while it runs, and
a full volume reported as one.

Policy:
- the staging folder (the entry, and the home, temp and caches of its build) may hold at
  most ``installer.max_entry_bytes``, or the manifest's own ``max_entry_bytes`` (a CUDA
  toolkit, a PyTorch entry: several GiB). A step is killed once it is seen past it;
- the size is what the files take on disk (allocated blocks, each inode once, and at
  least :data:`INODE_CHARGE` per inode, so empty files are not free), found by a walk
  relative to open folder descriptors that never follows a link, so what the step is
  doing to the tree cannot send the walk elsewhere;
- the walk runs at most every :data:`INTERVAL` seconds, and never takes more than a
  twentieth of the step's time: a tree of many small files (node_modules) is walked
  less often. Between walks a statvfs a second brings the next walk forward when the
  volume is filling fast, and ends the step when the volume is out of space or inodes;
- when a step fails, or ends, with the volume (nearly) full, or its output says so, the
  error names the volume instead of whatever failed next (a check that printed
  nothing).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent.store import layout

if TYPE_CHECKING:
    from os import _ScandirIterator

DEFAULT_MAX_ENTRY_BYTES = 32 * 1024**3
INTERVAL = 2.0
NEARLY_FULL = 1024 * 1024
"""Bytes free (for an unprivileged writer) below which the volume counts as full."""
_SHARE = 20
GLANCE = 1.0
"""Seconds between the statvfs glances of a watch (see :meth:`SizeWatch._filling`)."""
MAX_SEEN = 100_000
"""Multiply-linked files remembered per walk (see :func:`tree_bytes`)."""
INODE_CHARGE = 4096
"""Bytes each file or folder counts for at least, whatever it allocates."""
NEARLY_NO_INODES = 64
"""Inodes free below which the volume counts as full."""
MAX_DEPTH = 256
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_SPACE = ("No space left on device", "ENOSPC", "Disk quota exceeded", "EDQUOT")


class EntryTooBig(layout.StoreError):
    """A step's staging folder grew past its limit; the step was killed."""


class VolumeFull(layout.StoreError):
    """The store's volume filled up during a step."""


def human(size: int) -> str:
    """``34359738368`` -> ``32 GiB``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


class SizeWatch:
    """A :func:`agent.kits.procs.run` ``watch``: raises :class:`EntryTooBig` once the
    folder is past ``limit`` bytes, and :class:`VolumeFull` once the volume is."""

    def __init__(self, folder: Path, limit: int, *, what: str) -> None:
        self.folder, self.limit, self.what = folder, limit, what
        self._next = time.monotonic() + INTERVAL
        self._size = 0
        self._free = _free(folder)
        self._glance = 0.0
        self._soonest = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self._next and not (now >= self._soonest and self._filling(now)):
            return
        size = tree_bytes(self.folder)
        took = time.monotonic() - now
        self._next = time.monotonic() + max(INTERVAL, took * _SHARE)
        # Brought forward by a filling volume, a walk still costs at most a fifth of the
        # time: other writers on a shared volume must not make it walk without pause.
        self._soonest = time.monotonic() + max(GLANCE, took * 5)
        self._size, self._free = size, _free(self.folder)
        if size > self.limit:
            raise EntryTooBig(
                f"{self.what} was killed: its staging folder reached {human(size)}, past the "
                f"limit of {human(self.limit)} ({self.limit} bytes, installer.max_entry_bytes "
                "or the manifest's max_entry_bytes); raise it for a feature that needs more"
            )

    def _filling(self, now: float) -> bool:
        """Between walks, one statvfs a second: a walk is due at once when the volume
        lost more than half the room left below the limit since the last walk (a step
        that writes fast must not get a whole spaced-out interval), and a volume out of
        space or inodes ends the step."""
        if now - self._glance < GLANCE:
            return False
        self._glance = now
        free = _free(self.folder)
        if free is None or self._free is None:
            return False
        if free[0] < NEARLY_FULL or free[1] < NEARLY_NO_INODES:
            check_volume(self.folder, "", what=self.what, failed=False)
        room = max(self.limit - self._size, 0)
        return self._free[0] - free[0] > room // 2


def _free(folder: Path) -> tuple[int, int] | None:
    """Bytes and inodes free for an unprivileged writer on ``folder``'s volume."""
    try:
        vfs = os.statvfs(folder)
    except OSError:
        return None
    return vfs.f_bavail * vfs.f_frsize, vfs.f_favail


def tree_bytes(folder: Path) -> int:
    """Bytes the files under ``folder`` take on disk; 0 when it is gone. Raises
    :class:`EntryTooBig` for folders nested past :data:`MAX_DEPTH`."""
    try:
        fd = os.open(folder, _DIR_FLAGS)
    except OSError:
        return 0
    seen: set[tuple[int, int]] = set()
    total = 0
    # Depth first, one open folder per level: the descriptors held are the depth.
    stack: list[tuple[int, _ScandirIterator[str]]] = []
    try:
        stack.append((fd, os.scandir(fd)))
        while stack:
            current, listing = stack[-1]
            item = next(listing, None)
            if item is None:
                stack.pop()
                listing.close()
                os.close(current)
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue  # removed while looked at
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode) and len(seen) < MAX_SEEN:
                # Only a file with several names can be met twice (folders cannot be
                # linked). Past MAX_SEEN such files each name counts again: too much,
                # never too little, and the set stays bounded against a tree of links.
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            # Every inode costs at least a block: a million empty files are not free.
            total += max(st.st_blocks * 512, INODE_CHARGE)
            if not stat.S_ISDIR(st.st_mode):
                continue
            if len(stack) >= MAX_DEPTH:
                raise EntryTooBig(
                    f"{folder} nests folders more than {MAX_DEPTH} deep; no tool needs that"
                )
            try:
                child = os.open(item.name, _DIR_FLAGS, dir_fd=current)
            except OSError:
                continue  # swapped for a link, or removed: nothing to count there
            try:
                stack.append((child, os.scandir(child)))
            except OSError:
                os.close(child)
    finally:
        for current, listing in stack:
            listing.close()
            os.close(current)
    return total


def check_volume(path: Path, output: str, *, what: str, failed: bool) -> None:
    """Raise :class:`VolumeFull` when ``path``'s volume is (nearly) full, or when the
    step ``failed`` and its ``output`` says a write found no space."""
    try:
        vfs = os.statvfs(path)
        free = vfs.f_bavail * vfs.f_frsize
    except OSError:
        return
    said = failed and any(marker in output for marker in _NO_SPACE)
    no_inodes = vfs.f_files > 0 and vfs.f_favail < NEARLY_NO_INODES
    if free >= NEARLY_FULL and not no_inodes and not said:
        return
    mount = _mount_point(path)
    shown = f"{vfs.f_favail} inodes free" if no_inodes else f"{human(free)} free"
    raise VolumeFull(
        f"the store volume at {mount} is full ({shown}) while {what} ran"
        + (" and it reported 'No space left on device'" if said else "")
        + "; free space there (runner-agent cache gc, a smaller cache.size_budget) or give "
        "the volume more"
    )


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    try:
        dev = path.stat().st_dev
        while path.parent != path and path.parent.stat().st_dev == dev:
            path = path.parent
    except OSError:
        pass
    return path
