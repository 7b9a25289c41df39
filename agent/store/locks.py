"""Locks on the shared volume: one install of an entry at a time, across pods.

Policy:
- the default backend takes Linux open-file-description locks (``F_OFD_SETLK``) on a lock
  file inside the store, so every pod that mounts the volume sees them (NFSv3/v4 with
  lockd carries them as POSIX locks). OFD locks belong to the open file, not the process:
  closing some other descriptor of the same file cannot drop them by accident, as it
  would a classic ``fcntl`` record lock. Where the kernel lacks them, classic record
  locks are used, with an in-process lock on top so threads still exclude each other;
- a dead holder's lock is released by the kernel (or the NFS lock manager), so a waiter
  polls and proceeds within one poll interval of a SIGKILL;
- a waiter logs who holds the lock and for how long, every ``report_every`` seconds, and
  gives up after ``timeout`` with :class:`LockTimeout`;
- backends implement :class:`LockBackend`; the lease backend for filesystems without
  cross-client locks plugs in there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.kits import progress
from agent.store import layout, nofollow

logger = logging.getLogger(__name__)

_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)
# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t
# l_pid (l_pid must be 0 for OFD locks); 32 bytes with native alignment.
_FLOCK = "hhqqi4x"


_LOCAL: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


class NotNeeded(Exception):
    """Raised from :meth:`LockBackend.hold` when ``done()`` says the work was done meanwhile."""


class LockTimeout(layout.StoreError):
    """The lock was not free within the timeout; the message names the holder."""


class LockUnavailable(layout.StoreError):
    """The volume cannot lock at all (no lock support, an unusable lock file or lease):
    retrying will not help, the mount or the lock backend must change."""


class LockBackend(Protocol):
    """How installs of one entry exclude each other."""

    def hold(
        self,
        path: Path,
        *,
        what: str,
        timeout: float,
        done: Callable[[], bool] | None = None,
    ) -> contextlib.AbstractContextManager[None]:
        """Hold the lock at ``path`` for the ``with`` block, waiting up to ``timeout``.

        While waiting, ``done()`` is asked each poll; when it says the holder finished
        the work, :class:`NotNeeded` is raised instead of queueing for the lock.
        """
        ...


class PosixLocks:
    """OFD locks (classic record locks as a fallback) on files in the store."""

    def __init__(self, *, poll: float = 0.05, report_every: float = 5.0) -> None:
        self.poll = poll
        self.report_every = report_every

    def _thread_lock(self, path: Path) -> threading.Lock:
        # One table for the whole process, not per instance: every caller in this process
        # must share it, or two threads could both "hold" a classic record lock.
        with _GUARD:
            return _LOCAL.setdefault(str(path), threading.Lock())

    @contextlib.contextmanager
    def hold(
        self,
        path: Path,
        *,
        what: str,
        timeout: float,
        done: Callable[[], bool] | None = None,
    ) -> Iterator[None]:
        """See :meth:`LockBackend.hold`."""
        start = time.monotonic()
        local = self._thread_lock(path)
        if not local.acquire(timeout=max(timeout, 0)):
            raise LockTimeout(f"timed out after {timeout:g} s waiting for {what} in this agent")
        try:
            dirfd, fd = _open_lock(path, what)
            try:
                how = _Waiting(
                    what,
                    timeout,
                    done,
                    self.poll,
                    self.report_every,
                    lambda: describe_holder(path),
                    "that install is still running (a lock dies with its process; on NFS a "
                    "dead node's lock lasts until lockd or the NFSv4 lease recovers it). Raise "
                    "installer.lock_timeout_seconds for slow downloads; never delete the lock "
                    "file, which would let two installs run",
                )
                _wait(lambda: _try_lock(fd), how, start=start)
                _write_holder(dirfd, path)
                try:
                    yield
                finally:
                    # Only the holder removes it: a waiter that gave up must not erase
                    # who holds the lock from the next waiter's messages.
                    with contextlib.suppress(OSError):
                        os.unlink(holder_file(path).name, dir_fd=dirfd)
            finally:
                os.close(fd)  # releases the lock
                os.close(dirfd)
        finally:
            local.release()


def _open_lock(path: Path, what: str) -> tuple[int, int]:
    """The lock file's folder and the lock file, opened without following a link: a link
    planted at the lock's name (or at a folder above it) is refused, never created or
    locked through."""
    try:
        dirfd, name = nofollow.open_parent(path)
    except nofollow.LinkRefused as exc:
        raise LockUnavailable(f"cannot lock {what}: {exc.strerror}") from exc
    except OSError as exc:
        raise LockUnavailable(
            f"cannot open the folder of the lock file {path} for {what}: {exc.strerror}; the "
            "store's .runner-agent/locks must be a real, writable folder"
        ) from exc
    try:
        fd = nofollow.open_file(dirfd, name, os.O_RDWR | os.O_CREAT, 0o644, at=str(path.parent))
    except nofollow.LinkRefused as exc:
        os.close(dirfd)
        raise LockUnavailable(f"cannot lock {what}: {exc.strerror}") from exc
    except OSError as exc:
        os.close(dirfd)
        raise LockUnavailable(
            f"cannot open the lock file {path} for {what}: {exc.strerror}; the store's "
            ".runner-agent/locks folder must be a writable folder of regular files"
        ) from exc
    return dirfd, fd


@dataclass(frozen=True)
class _Waiting:
    """How a backend waits: poll interval, progress reports, who holds it, timeout advice."""

    what: str
    timeout: float
    done: Callable[[], bool] | None
    poll: float
    report_every: float
    holder: Callable[[], str]
    advice: str


def _wait(acquired: Callable[[], bool], how: _Waiting, *, start: float) -> None:
    """Poll ``acquired()`` until it is true, with progress logs, ``done`` and a timeout.

    Both backends wait the same way; they differ in what one try is and who the holder
    is. Polls are jittered so many waiters do not wake in step and queue one per poll.
    """
    next_report = start + how.report_every
    told = False
    while not acquired():
        if how.done is not None and how.done():
            raise NotNeeded(how.what)
        now = time.monotonic()
        if now - start >= how.timeout:
            raise LockTimeout(
                f"timed out after {how.timeout:g} s waiting for {how.what}, {how.holder()}: "
                f"{how.advice}"
            )
        if not told or now >= next_report:
            holder = how.holder()
            progress.report("waiting-for-lock", holder=holder, waited=round(now - start, 3))
            told = True
        if now >= next_report:
            logger.info("waiting for %s, %s for %.0f s", how.what, holder, now - start)
            next_report = now + how.report_every
        time.sleep(how.poll * random.uniform(0.5, 1.5))  # noqa: S311 - not crypto


def _try_lock(fd: int) -> bool:
    try:
        if _OFD_SETLK is not None:
            fcntl.fcntl(fd, _OFD_SETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
        else:  # pragma: no cover - kernels before 3.15
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return False
        if exc.errno == errno.ENOLCK:
            raise LockUnavailable(
                "the store's volume does not support locks (an NFS mount without lockd, or "
                "nolock); mount it with locking, or use a lock backend for such volumes"
            ) from exc
        raise LockUnavailable(f"cannot lock: {exc.strerror}") from exc
    return True


def holder_file(path: Path) -> Path:
    """Where the holder writes who it is (lock state itself lives in the kernel)."""
    return path.with_name(path.name + ".holder")


def _write_holder(dirfd: int, path: Path) -> None:
    info = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    with contextlib.suppress(OSError):
        nofollow.write_atomic_at(dirfd, holder_file(path).name, json.dumps(info).encode())


_INFO_LIMIT = 64 * 1024
"""Bytes read at most from a holder or lease file (a planted huge file is not read)."""


def _info(path: Path) -> Any:
    return json.loads(nofollow.read(path, _INFO_LIMIT))


def describe_holder(path: Path) -> str:
    """``locked by host X pid Y`` from the holder file, as far as it can be read."""
    try:
        info = _info(holder_file(path))
        return f"locked by host {info['host']} pid {info['pid']}"
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
        return "locked by another agent"


class LeaseLocks:
    """Lease files, for volumes without cross-client locks (object-store FUSE mounts).

    Policy: the lease is a file created with ``O_EXCL`` holding host, pid, a random token
    and the expiry; the holder heartbeats it (rewrites its mtime) every ``ttl / 3``
    seconds from a thread. A lease whose mtime is older than ``ttl`` is stale: a waiter
    takes it over by renaming it to a unique name (only one rename can succeed), checking
    that what it took is still stale (a heartbeat may have landed in between; then it is
    put back), and creating its own. A dead holder therefore delays waiters by at most
    ``ttl``; a slow but live holder never loses its lease.
    """

    def __init__(self, *, ttl: float = 30.0, poll: float = 0.1, report_every: float = 5.0) -> None:
        self.ttl = ttl
        self.poll = poll
        self.report_every = report_every

    @contextlib.contextmanager
    def hold(
        self,
        path: Path,
        *,
        what: str,
        timeout: float,
        done: Callable[[], bool] | None = None,
    ) -> Iterator[None]:
        """See :meth:`LockBackend.hold`."""
        lease = path.with_name(path.name + ".lease")
        token = os.urandom(8).hex()
        try:
            dirfd, name = nofollow.open_parent(lease)
        except OSError as exc:
            raise LockUnavailable(
                f"cannot open the folder of the lease {lease} for {what}: {exc.strerror}"
            ) from exc
        at = _At(dirfd, name, str(lease.parent))
        try:
            how = _Waiting(
                what,
                timeout,
                done,
                self.poll,
                self.report_every,
                lambda: describe_lease(lease),
                "a dead holder's lease goes stale after the lease time",
            )

            def acquired() -> bool:
                if self._try_create(at, token):
                    return True
                self._take_over_if_stale(at)
                return self._try_create(at, token)

            _wait(acquired, how, start=time.monotonic())
            stop = threading.Event()
            beat = threading.Thread(
                target=self._heartbeat, args=(at, stop), name="lease heartbeat", daemon=True
            )
            beat.start()
            try:
                yield
            finally:
                stop.set()
                beat.join()
                if _lease_token(at) == token:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=dirfd)
        finally:
            os.close(dirfd)

    def _try_create(self, at: _At, token: str) -> bool:
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": token,
            "expires": time.time() + self.ttl,
        }
        try:
            fd = os.open(
                at.name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=at.dirfd,
            )
        except FileExistsError:
            return False
        except OSError as exc:
            raise LockUnavailable(f"cannot create the lease {at}: {exc.strerror}") from exc
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def _stale(self, at: _At, name: str) -> bool:
        try:
            st = os.stat(name, dir_fd=at.dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return time.time() - st.st_mtime > self.ttl

    def _take_over_if_stale(self, at: _At) -> None:
        if not self._stale(at, at.name):
            return
        tomb = f"{at.name}.stale-{os.urandom(6).hex()}"
        fd = at.dirfd
        try:
            # One waiter wins; the others find nothing to rename.
            os.rename(at.name, tomb, src_dir_fd=fd, dst_dir_fd=fd)
        except FileNotFoundError:
            return
        if self._stale(at, tomb):
            logger.warning("took over a stale lease: %s", _describe_lease_at(fd, tomb))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tomb, dir_fd=fd)
        else:  # a heartbeat landed after the check: give the lease back, unless taken
            with contextlib.suppress(OSError):
                # Never replaces a lease another waiter created; a link is linked itself.
                os.link(tomb, at.name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tomb, dir_fd=fd)

    def _heartbeat(self, at: _At, stop: threading.Event) -> None:
        while not stop.wait(self.ttl / 3):
            with contextlib.suppress(OSError, NotImplementedError):
                os.utime(at.name, dir_fd=at.dirfd, follow_symlinks=False)


@dataclass(frozen=True)
class _At:
    """A lease file: its folder's descriptor (held for the lease's life) and its name."""

    dirfd: int
    name: str
    folder: str

    def __str__(self) -> str:
        return os.path.join(self.folder, self.name)


def _lease_token(at: _At) -> str | None:
    try:
        raw = nofollow.read_at(at.dirfd, at.name, _INFO_LIMIT)
        return str(json.loads(raw)["token"])
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
        return None


def _describe_lease_at(dirfd: int, name: str) -> str:
    try:
        info = json.loads(nofollow.read_at(dirfd, name, _INFO_LIMIT))
        return f"leased by host {info['host']} pid {info['pid']}"
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
        return "leased by another agent"


def describe_lease(lease: Path) -> str:
    """``leased by host X pid Y`` from the lease file, as far as it can be read."""
    try:
        info = _info(lease)
        return f"leased by host {info['host']} pid {info['pid']}"
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
        return "leased by another agent"


def backend(name: str, *, lease_ttl: float = 30.0) -> LockBackend:
    """The lock backend the ``cache.lock_backend`` setting names."""
    if name == "lease":
        return LeaseLocks(ttl=lease_ttl)
    return PosixLocks()
