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
  atomically, read up to :data:`MAX_BYTES`; a note whose first line is not its key, or
  that cannot be read, is no note; its age is its mtime, and a caller says how old a
  note it takes;
- a kind holds at most :data:`MAX_NOTES`: a write that finds more removes the oldest, and
  anything older than :data:`MAX_AGE` (a swept folder is swept again after a minute);
- :meth:`Notes.exclusive` makes one agent fetch while the others wait, through the
  store's lock backend, on one of :data:`SHARDS` lock files per kind (a bounded set,
  never swept). The lock only saves requests: losing it costs a second fetch, never a
  wrong answer, and a waiter gives up at its deadline and fetches itself;
- every file operation runs in a thread: the store may be a slow network volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import re
import time
from collections.abc import AsyncIterator

from agent.store import layout, locks, nofollow

logger = logging.getLogger(__name__)

MAX_BYTES = 1 << 20
"""The largest note read or written."""
MAX_NOTES = 4096
"""Notes one kind keeps; the oldest go first past it."""
MAX_AGE = 24 * 3600.0
"""No note is older than this: sweeping removes it."""
SHARDS = 64
"""Lock files per kind: keys share them by their hash."""
SWEEP_EVERY = 60.0
POLL = 0.05
"""How often a waiter tries the lock again (on average: each pause is jittered)."""
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

    def _folder(self, kind: str) -> int:
        if not _KIND.fullmatch(kind):
            raise ValueError(f"{kind!r} is not a note kind")
        fd = nofollow.open_dir(self.store.root, (layout.META, "notes", kind), create=True)
        try:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid():
                # Someone else's folder: whoever made it could write notes into it.
                raise PermissionError(f"notes/{kind} belongs to uid {info.st_uid}, not the agent")
            if info.st_mode & 0o077:
                os.fchmod(fd, 0o700)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _read(self, kind: str, key: str, max_age: float) -> bytes | None:
        try:
            fd = self._folder(kind)
        except OSError:
            return None
        try:
            name = _name(key)
            age = time.time() - os.stat(name, dir_fd=fd, follow_symlinks=False).st_mtime
            if age > max_age:
                return None
            raw = nofollow.read_at(fd, name, MAX_BYTES + len(key) + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        head, _, data = raw.partition(b"\n")
        return data if head == key.encode() else None

    def _write(self, kind: str, key: str, data: bytes) -> None:
        if len(data) > MAX_BYTES or "\n" in key:
            raise NoteError(f"a {kind} note is at most {MAX_BYTES} bytes under a one-line key")
        try:
            fd = self._folder(kind)
            try:
                nofollow.write_atomic_at(fd, _name(key), key.encode() + b"\n" + data, mode=0o600)
                if time.monotonic() - self._swept.get(kind, -SWEEP_EVERY) >= SWEEP_EVERY:
                    self._swept[kind] = time.monotonic()
                    _sweep(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise NoteError(f"cannot leave a {kind} note in {self.store.root}: {exc}") from exc

    async def read(self, kind: str, key: str, *, max_age: float) -> bytes | None:
        """The data of the ``kind`` note for ``key`` if one at most ``max_age`` s old is
        there, else ``None``."""
        return await asyncio.to_thread(self._read, kind, key, max_age)

    async def write(self, kind: str, key: str, data: bytes) -> None:
        """Leave ``data`` as the ``kind`` note for ``key`` (replacing any). A note that
        cannot be left is logged, never the caller's failure: it only saves requests."""
        try:
            await asyncio.to_thread(self._write, kind, key, data)
        except NoteError as exc:
            logger.warning("%s", exc)

    async def forget(self, kind: str, key: str) -> None:
        """Remove the ``kind`` note for ``key``, if there is one."""

        def remove() -> None:
            with contextlib.suppress(OSError):
                fd = self._folder(kind)
                try:
                    os.unlink(_name(key), dir_fd=fd)
                finally:
                    os.close(fd)

        await asyncio.to_thread(remove)

    @contextlib.asynccontextmanager
    async def exclusive(self, kind: str, key: str, *, wait: float) -> AsyncIterator[bool]:
        """Hold ``key``'s lock (shared with a few other keys) for the block, waiting up to
        ``wait`` seconds; yields whether it is held: a caller that could not get it in time
        goes on without it. The wait polls from the loop: no thread is tied up waiting."""
        try:
            os.close(await asyncio.to_thread(self._folder, kind))
        except OSError as exc:
            logger.debug("going on without the %s note lock: %s", kind, exc)
            yield False
            return
        shard = int(_name(key)[:8], 16) % SHARDS
        path = self.store.root / layout.META / "notes" / kind / f"lock-{shard:02d}"
        deadline = time.monotonic() + max(0.0, wait)
        hold: contextlib.AbstractContextManager[None] | None = None
        while hold is None:
            attempt = self.backend.hold(path, what=f"the {kind} note", timeout=0)
            entering = asyncio.ensure_future(asyncio.to_thread(attempt.__enter__))
            try:
                await asyncio.shield(entering)
                hold = attempt
            except asyncio.CancelledError:
                entering.add_done_callback(lambda f, a=attempt: _release_late(f, a))  # type: ignore[misc]
                raise
            except locks.LockTimeout:
                if time.monotonic() >= deadline:
                    break
                # Jittered: waiters that started together do not all retry together.
                pause = POLL * random.uniform(0.5, 1.5)  # noqa: S311 - not a secret
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            except (locks.LockUnavailable, OSError) as exc:
                logger.debug("going on without the %s note lock: %s", kind, exc)
                break
        if hold is None:
            yield False
            return
        try:
            yield True
        finally:
            await asyncio.to_thread(hold.__exit__, None, None, None)


def _release_late(
    entered: asyncio.Future[None], hold: contextlib.AbstractContextManager[None]
) -> None:
    # The waiter was cancelled while its thread still waited: a lock it got after all is
    # let go at once, not left held for the life of the process.
    if not entered.cancelled() and entered.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, hold.__exit__, None, None, None)


def _sweep(fd: int) -> None:
    now = time.time()
    notes: list[tuple[float, str]] = []
    for name in nofollow.names(fd):
        if name.startswith("lock-"):
            continue
        try:
            mtime = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mtime
        except OSError:
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
