"""Notes that agents sharing a store leave for each other: small answers worth one fetch.

A matrix's legs run on many pods that share one store; each would ask GitHub the same
questions (one run's job list, one commit's team file). The first agent's answer is left
here for the others (``agent.github`` reads and writes it through this module's
:class:`Notes`, which it knows only by its shape).

Policy:
- a note is ``<root>/.runner-agent/notes/<kind>/<sha256 of the key>``: the key on the
  first line, the data after it. Its folder is the agent's alone (0700) and the note 0600:
  a team file of a private repository is no job's to read;
- notes are reached without following links (:mod:`agent.store.nofollow`), written
  atomically, read up to :data:`MAX_BYTES`. A note is believed only if it is a regular
  file of the agent's own uid, private (no group or other bits), with one link, dated no
  later than now (plus :data:`CLOCK_SLACK`), and its first line names its kind and key:
  anything else is no note, and the sweep removes it. Its age is its mtime, and a caller
  says how old a note it takes;
- a kind holds at most :data:`MAX_NOTES`: a write that finds more removes the oldest, and
  anything older than :data:`MAX_AGE` (a swept folder is swept again after a minute);
- :meth:`Notes.exclusive` makes one agent fetch while the others wait, through the
  store's lock backend, on one of :data:`SHARDS` lock files per kind (a bounded set,
  never swept). The lock only saves requests: losing it costs a second fetch, never a
  wrong answer. A waiter polls with jittered, growing pauses, leaves as soon as the
  caller's ``ready`` says the answer is there, and gives up at its wait and fetches
  itself; a lock attempt that hangs (a sick network volume) is bounded by the same wait;
- every file operation runs in the notes' own threads, each bounded by
  :data:`IO_SECONDS` (a timeout is "no note"): the store may be a slow network volume,
  and a sick one must not starve the installs' threads. A lock is let go even when its
  holder is cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import random
import re
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from agent.store import layout, locks, nofollow

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BYTES = 1 << 20
"""The largest note read or written."""
MAX_NOTES = 4096
"""Notes one kind keeps; the oldest go first past it."""
MAX_AGE = 24 * 3600.0
"""No note is older than this: sweeping removes it."""
SHARDS = 1024
"""Lock files per kind: keys share them by their hash (rarely: unrelated keys that
share one wait for each other's fetch)."""
SWEEP_EVERY = 60.0
POLL = 0.05
"""A waiter's first pause before it tries the lock again; pauses double, jittered, up to
:data:`POLL_MAX`."""
POLL_MAX = 0.5
IO_SECONDS = 5.0
"""Longest one note read, write or lock attempt may take before it counts as failed."""
CLOCK_SLACK = 5.0
"""Seconds a note's mtime may be ahead of this host's clock (pods' clocks differ)."""
_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")


class NoteError(layout.StoreError):
    """A note cannot be written (the store is not writable there, or it is too big)."""


def _name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Notes:
    """The notes of the store at ``store``, under its lock backend."""

    def __init__(self, store: layout.Store, backend: locks.LockBackend) -> None:
        self.store = store
        self.backend = backend
        self._swept: dict[str, float] = {}
        self._refused: dict[str, float] = {}
        # Their own threads: a hung network volume ties up these, not the installs'.
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="notes")

    def _folder(self, kind: str) -> int:
        if not _KIND.fullmatch(kind):
            raise ValueError(f"{kind!r} is not a note kind")
        fd = nofollow.open_dir(self.store.root, (layout.META, "notes", kind), create=True)
        try:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid():
                # Someone else's folder: whoever made it could write notes into it.
                raise NoteError(
                    f"{self.store.root}/{layout.META}/notes/{kind} belongs to uid "
                    f"{info.st_uid}, not the agent's {os.geteuid()}: notes are off until it "
                    "is removed (or chowned to the agent), e.g. when agents of different "
                    "uids, or a root-squashing NFS export, share the store"
                )
            if info.st_mode & 0o077:
                os.fchmod(fd, 0o700)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _open_folder(self, kind: str) -> int | None:
        """The folder, or None (said once a minute per kind when it is refused)."""
        try:
            return self._folder(kind)
        except NoteError as exc:
            if time.monotonic() - self._refused.get(kind, -SWEEP_EVERY) >= SWEEP_EVERY:
                self._refused[kind] = time.monotonic()
                logger.warning("%s", exc)
            return None
        except OSError:
            return None

    def _read(self, kind: str, key: str, max_age: float) -> tuple[bytes, float] | None:
        fd = self._open_folder(kind)
        if fd is None:
            return None
        head = _head(kind, key)
        try:
            note = nofollow.open_file(fd, _name(key), os.O_RDONLY)
        except OSError:
            return None
        finally:
            os.close(fd)
        try:
            info = os.fstat(note)
            age = time.time() - info.st_mtime
            if not _believable(info) or age > max_age:
                return None
            if info.st_size > MAX_BYTES + len(head):
                return None
            raw = os.read(note, MAX_BYTES + len(head) + 1)
        except OSError:
            return None
        finally:
            os.close(note)
        first, _, data = raw.partition(b"\n")
        return (data, max(0.0, age)) if first == head[:-1] else None

    def _write(self, kind: str, key: str, data: bytes) -> None:
        if len(data) > MAX_BYTES or "\n" in key or "\0" in key:
            raise NoteError(f"a {kind} note is at most {MAX_BYTES} bytes under a one-line key")
        try:
            fd = self._folder(kind)
            try:
                nofollow.write_atomic_at(fd, _name(key), _head(kind, key) + data, mode=0o600)
                if time.monotonic() - self._swept.get(kind, -SWEEP_EVERY) >= SWEEP_EVERY:
                    self._swept[kind] = time.monotonic()
                    _sweep(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise NoteError(f"cannot leave a {kind} note in {self.store.root}: {exc}") from exc

    async def _io(self, what: str, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in the notes' threads, bounded by :data:`IO_SECONDS`."""
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._pool, fn, *args)
        try:
            return await asyncio.wait_for(asyncio.shield(done), IO_SECONDS)
        except TimeoutError:
            done.add_done_callback(_retrieve)
            raise NoteError(
                f"{what} took over {IO_SECONDS:g} s: is the store's volume sick?"
            ) from None

    async def read(self, kind: str, key: str, *, max_age: float) -> bytes | None:
        """The data of the ``kind`` note for ``key`` if one at most ``max_age`` s old is
        there, else ``None``."""
        aged = await self.read_aged(kind, key, max_age=max_age)
        return aged[0] if aged is not None else None

    async def read_aged(self, kind: str, key: str, *, max_age: float) -> tuple[bytes, float] | None:
        """:meth:`read`, with the note's age in seconds: one read for callers whose answer
        depends on how old the note is."""
        try:
            return await self._io(f"reading a {kind} note", self._read, kind, key, max_age)
        except NoteError as exc:
            logger.warning("%s", exc)
            return None

    async def write(self, kind: str, key: str, data: bytes) -> None:
        """Leave ``data`` as the ``kind`` note for ``key`` (replacing any). A note that
        cannot be left is logged, never the caller's failure: it only saves requests."""
        try:
            await self._io(f"leaving a {kind} note", self._write, kind, key, data)
        except NoteError as exc:
            logger.warning("%s", exc)

    async def forget(self, kind: str, key: str) -> None:
        """Remove the ``kind`` note for ``key``, if there is one."""

        def remove() -> None:
            fd = self._open_folder(kind)
            if fd is None:
                return
            try:
                with contextlib.suppress(OSError):
                    os.unlink(_name(key), dir_fd=fd)
            finally:
                os.close(fd)

        try:
            await self._io(f"removing a {kind} note", remove)
        except NoteError as exc:
            logger.warning("%s", exc)

    @contextlib.asynccontextmanager
    async def exclusive(
        self,
        kind: str,
        key: str,
        *,
        wait: float,
        ready: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[bool]:
        """Hold ``key``'s lock (shared with a few other keys) for the block, waiting up to
        ``wait`` seconds; yields whether it is held: a caller that could not get it in time,
        or whose ``ready()`` said between attempts that the answer is there now, goes on
        without it. The wait polls from the loop: no thread is tied up waiting."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait)
        fd = None
        with contextlib.suppress(NoteError):
            fd = await self._io(f"opening the {kind} notes", self._open_folder, kind)
        if fd is None:
            yield False
            return
        os.close(fd)
        shard = int(_name(key)[:8], 16) % SHARDS
        path = self.store.root / layout.META / "notes" / kind / f"lock-{shard:04d}"
        hold: contextlib.AbstractContextManager[None] | None = None
        pause = POLL
        while hold is None:
            attempt = self.backend.hold(path, what=f"the {kind} note", timeout=0)
            entering = loop.run_in_executor(self._pool, attempt.__enter__)
            try:
                left = max(0.0, deadline - loop.time())
                await asyncio.wait_for(asyncio.shield(entering), min(IO_SECONDS, max(left, 0.5)))
                hold = attempt
            except asyncio.CancelledError:
                # A lock it gets after all is let go at once.
                entering.add_done_callback(lambda f, a=attempt: _release_late(f, a))  # type: ignore[misc]
                raise
            except TimeoutError:
                # The attempt hangs (a sick volume): the wait is over, without the lock.
                entering.add_done_callback(lambda f, a=attempt: _release_late(f, a))  # type: ignore[misc]
                logger.debug("going on without the %s note lock: the attempt hangs", kind)
                break
            except locks.LockTimeout:
                if loop.time() >= deadline:
                    break
                # Jittered and growing: waiters that started together spread out, and a
                # long fetch is not polled twenty times a second by every pod.
                pause = min(POLL_MAX, pause * 2)
                sleep = pause * random.uniform(0.5, 1.0)  # noqa: S311 - not a secret
                await asyncio.sleep(min(sleep, max(0.0, deadline - loop.time())))
                if ready is not None and await ready():
                    break
            except (locks.LockUnavailable, OSError) as exc:
                logger.debug("going on without the %s note lock: %s", kind, exc)
                break
        if hold is None:
            yield False
            return
        try:
            yield True
        finally:
            release = loop.run_in_executor(self._pool, hold.__exit__, None, None, None)
            release.add_done_callback(_retrieve)
            # Shielded: a cancelled holder still lets go (in the thread, never the loop).
            await asyncio.shield(release)


def _head(kind: str, key: str) -> bytes:
    """A note's first line: its kind and key (a note moved to another kind is no note)."""
    return kind.encode() + b"\0" + key.encode() + b"\n"


def _believable(info: os.stat_result) -> bool:
    return (
        stat.S_ISREG(info.st_mode)
        and info.st_uid == os.geteuid()
        and info.st_nlink == 1
        and not info.st_mode & 0o077
        and info.st_mtime <= time.time() + CLOCK_SLACK
    )


def _retrieve(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.warning("a note operation failed late: %s", done.exception())


def _release_late(
    entered: asyncio.Future[None], hold: contextlib.AbstractContextManager[None]
) -> None:
    # The waiter was cancelled while its thread still waited: a lock it got after all is
    # let go at once, not left held for the life of the process.
    if not entered.cancelled() and entered.exception() is None:
        late = asyncio.get_running_loop().run_in_executor(None, hold.__exit__, None, None, None)
        late.add_done_callback(_retrieve)


def _sweep(fd: int) -> None:
    now = time.time()
    notes: list[tuple[float, str]] = []
    for name in nofollow.names(fd):
        if name.startswith("lock-"):
            continue
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue
        mtime = info.st_mtime
        if not name.startswith(".") and not _believable(info):
            # Planted (another uid, a link, loose bits) or dated ahead: never read, and
            # a future mtime would otherwise outlive every sweep.
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=fd)
            continue
        if name.startswith("."):  # a write's temp file: one a killed writer left goes
            if now - mtime > 3600:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=fd)
            continue
        notes.append((mtime, name))
    notes.sort()
    excess = max(0, len(notes) - MAX_NOTES)
    for at, (mtime, name) in enumerate(notes):
        if at < excess or now - mtime > MAX_AGE:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=fd)
