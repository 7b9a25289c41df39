"""The uid a sandbox runs as: one of its own, from ``installer.script_uid_range``.

Why a uid per sandbox: RLIMIT_NPROC counts every process of a uid, so a process limit
on one shared user (``nobody``) would count the sandboxes of parallel installs, and any
other process of that user on the host, together; and file modes are a wall between
two sandboxes only when they are different users. A uid no one else has also owns no
file anywhere.

Policy:
- the lowest uid of the range that is free is taken, so the lock files stay as many as
  sandboxes ever ran at once;
- free means: its lock is not held, no process on this host (as far as this process's
  PID namespace sees) runs as it, and the user database does not name it;
- a uid is held by an exclusive ``flock`` in two folders, both opened without following
  links: the store's metadata folder (every agent sharing the volume, as the pods of a
  node do) and ``/run/runner-agent-sandbox-uids`` (every agent of a host in host mode). A folder
  that is not the agent's own, or that others may write, is not trusted with them.
  Agents that share a host but neither folder must be given disjoint ranges;
- it is held until the sandbox's files have been taken back, and released by the
  kernel when the agent dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

from agent.store import layout

LOCAL_LOCKS = Path("/run/runner-agent-sandbox-uids")
"""Host-wide where the agent runs on the host; best effort elsewhere."""


class NoFreeUid(layout.StoreError):
    """Every uid of the range is in use."""


@contextlib.contextmanager
def allocate(store_locks: Path, first: int, last: int) -> Iterator[int]:
    """Hold a free uid of ``first``-``last`` for the ``with`` block."""
    with contextlib.ExitStack() as stack:
        folders = [stack.enter_context(_folder(store_locks, required=True))]
        local = stack.enter_context(_folder(LOCAL_LOCKS, required=False))
        if local is not None:
            folders.append(local)
        busy = _uids_running(first, last)
        for uid in range(first, last + 1):
            if uid in busy or _known_user(uid):
                continue
            held = _try_lock(folders, uid)
            if held is None:
                continue
            try:
                yield uid
            finally:
                for fd in held:
                    os.close(fd)
            return
    raise NoFreeUid(
        f"every uid of installer.script_uid_range {first}-{last} is in use by another "
        "sandbox; widen the range"
    )


@contextlib.contextmanager
def _folder(path: Path, *, required: bool) -> Iterator[int | None]:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        # Both reached by descriptor, the parent without following a link at it: the
        # owner it shows is the folder's, not a planted link target's.
        parent = os.open(path.parent, flags)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path.name, 0o700, dir_fd=parent)
            fd = os.open(path.name, flags, dir_fd=parent)
            above = os.fstat(parent)
        finally:
            os.close(parent)
        st = os.fstat(fd)
        # The agent's own; on root-squashed NFS the agent's files belong to the squashed
        # user, as the store's metadata folder above it does (when no one else may write
        # that folder).
        owners = {os.geteuid()}
        if not above.st_mode & 0o022:
            owners.add(above.st_uid)
        if st.st_uid not in owners or st.st_mode & 0o022:
            os.close(fd)
            # Whoever else owns or may write it could hold every lock, or remove them.
            raise PermissionError(f"{path} is not the agent's own, or others may write it")
    except OSError as exc:
        if required:
            raise layout.StoreError(f"cannot open the sandbox uid locks at {path}: {exc}") from exc
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _try_lock(folders: list[int | None], uid: int) -> list[int] | None:
    held: list[int] = []
    try:
        for folder in folders:
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(f"{uid}.lock", flags, 0o600, dir_fd=folder)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BaseException:
                os.close(fd)
                raise
            held.append(fd)
    except BlockingIOError:
        for other in held:
            os.close(other)
        return None
    except OSError as exc:
        # ENOSPC, EMFILE, ENOLCK: no uid is held half-way for the life of the process.
        for other in held:
            os.close(other)
        raise layout.StoreError(f"cannot lock sandbox uid {uid}: {exc}") from exc
    return held


def _uids_running(first: int, last: int) -> set[int]:
    """The uids of the range that some visible process has (real, effective, saved, fs)."""
    busy: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as handle:
                for line in handle:
                    if line.startswith(b"Uid:"):
                        busy.update(u for u in map(int, line.split()[1:]) if first <= u <= last)
                        break
        except OSError:
            continue
    return busy


def _known_user(uid: int) -> bool:
    """Whether ``uid`` (and so the gid it is also used as) names an account or a group."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
        except KeyError:
            continue
        return True
    return False
