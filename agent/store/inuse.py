"""In-use leases: a job's claim on store entries, so no janitor evicts them under it.

Interface (for the ensure API and anything else that hands entries to a job)::

    handle = inuse.hold(store, keys, agent_id="pod-a/4242", job="run 17 build", ttl=300)
    handle.keep_alive()       # a daemon thread refreshes it every ttl/3 until release
    ...                       # the job runs
    handle.release()          # or: with inuse.hold(...) as handle: ...

    inuse.live(store)         # {entry key: [Lease, ...]} of every live lease, any pod

``hold`` and ``release`` do file I/O on the shared volume: from asyncio, call them through
``asyncio.to_thread``. ``keep_alive`` returns at once; its thread never touches the loop.

Policy:
- a lease is one file ``<root>/.runner-agent/inuse/<token>.json`` holding the agent's id,
  the job, the entry keys, host, pid and an expiry (wall-clock Unix time); it is written
  atomically and the holder rewrites it with a later expiry while the job runs;
- a lease is live until its expiry plus :data:`SKEW` (clocks of pods sharing a volume
  differ a little); a holder that dies stops refreshing and its lease lapses within
  ``ttl + SKEW``: a crashed job blocks eviction for at most that long, never forever;
- take the lease *before* looking an entry up: eviction removes the marker, then checks
  leases again, and puts the marker back if one appeared, so an entry a job got from a
  lookup after its lease was written is never removed under it;
- expired lease files are removed by ``cache gc``; a file that cannot be parsed counts as
  live until it is older than :data:`MAX_TTL` (better to keep an entry than break a job).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.store import layout, nofollow

logger = logging.getLogger(__name__)

SKEW = 10.0
"""Seconds a lease stays live past its expiry, for clock differences between pods."""
MAX_TTL = 24 * 3600.0
"""The longest lease one write may ask for (refresh it for longer jobs)."""


class LeaseError(layout.StoreError):
    """A lease could not be taken, refreshed or read; the message says what to fix."""


@dataclass(frozen=True)
class Lease:
    """One live or expired claim on entries."""

    token: str
    agent: str
    job: str
    keys: tuple[str, ...]
    host: str
    pid: int
    acquired: float
    expires: float

    def live(self, now: float | None = None) -> bool:
        """Whether it still protects its entries."""
        return (time.time() if now is None else now) < self.expires + SKEW

    def describe(self) -> str:
        """``job J of agent A`` for listings and logs."""
        return f"job {self.job!r} of agent {self.agent}"


def folder(store: layout.Store) -> Path:
    """Where lease files live."""
    return store.meta / "inuse"


@dataclass
class Handle:
    """A lease this process holds; refresh it while the job runs, release it after."""

    store: layout.Store
    lease: Lease
    ttl: float
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def path(self) -> Path:
        """The lease file."""
        return folder(self.store) / f"{self.lease.token}.json"

    def refresh(self) -> bool:
        """Push the expiry ``ttl`` seconds ahead; False when the lease had lapsed (or was
        removed) meanwhile: its entries may have been evicted, so ensure them again."""
        with self._lock:
            if self._stop.is_set():
                raise LeaseError(f"the in-use lease of {self.lease.describe()} was released")
            continuous = self.lease.live() and self.path.is_file()
            now = time.time()
            self.lease = Lease(**{**_fields(self.lease), "expires": now + self.ttl})
            _write(self.path, self.lease)
        if not continuous:
            logger.warning("the in-use lease of %s had lapsed; renewed it", self.lease.describe())
        return continuous

    def keep_alive(self, *, every: float | None = None) -> None:
        """Refresh from a daemon thread every ``every`` seconds (``ttl / 3``) until
        :meth:`release`. Refresh failures are logged and retried at the next beat."""
        if self._thread is not None:
            return
        period = every if every is not None else self.ttl / 3

        def beat() -> None:
            while not self._stop.wait(period):
                try:
                    self.refresh()
                except LeaseError as exc:
                    if self._stop.is_set():
                        return
                    logger.warning("cannot refresh the in-use lease %s: %s", self.path, exc)
                except OSError as exc:
                    logger.warning("cannot refresh the in-use lease %s: %s", self.path, exc)

        self._thread = threading.Thread(target=beat, name="in-use lease refresher", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop refreshing and remove the lease (idempotent)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        with self._lock, contextlib.suppress(FileNotFoundError):
            dirfd, name = nofollow.open_parent(self.path)
            try:
                os.unlink(name, dir_fd=dirfd)
            finally:
                os.close(dirfd)

    def __enter__(self) -> Handle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def hold(
    store: layout.Store, keys: Iterable[str], *, agent_id: str, job: str, ttl: float
) -> Handle:
    """Register that ``job`` (of agent ``agent_id``) uses the entries ``keys``
    (``name@version@leaf``, see :attr:`~agent.store.layout.Entry.key`) for ``ttl`` seconds."""
    wanted = tuple(sorted(set(keys)))
    if not 0 < ttl <= MAX_TTL:
        raise LeaseError(f"lease ttl {ttl!r} is out of range; expected 0 < ttl <= {MAX_TTL:g} s")
    if not wanted:
        raise LeaseError("a lease needs at least one entry key")
    now = time.time()
    lease = Lease(
        token=os.urandom(12).hex(),
        agent=agent_id,
        job=job,
        keys=wanted,
        host=socket.gethostname(),
        pid=os.getpid(),
        acquired=now,
        expires=now + ttl,
    )
    handle = Handle(store, lease, ttl)
    try:
        os.close(nofollow.open_dir(store.root, (layout.META, "inuse"), create=True))
    except OSError as exc:
        raise LeaseError(
            f"cannot create {folder(store)}: {exc.strerror}; the store must be writable"
        ) from exc
    _write(handle.path, lease)
    return handle


acquire = hold
"""The same as :func:`hold` (the name the brief of issue 6 uses)."""


def leases(store: layout.Store) -> list[Lease]:
    """Every lease file's content, live or not (unreadable ones as live, see the policy).
    The folder is opened without following links; a planted link there is refused."""
    try:
        dirfd = nofollow.open_dir(store.root, (layout.META, "inuse"))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LeaseError(f"cannot open {folder(store)}: {exc.strerror}") from exc
    found = []
    try:
        for name in nofollow.names(dirfd):
            if not name.endswith(".json") or name.startswith("."):
                continue
            lease = _read(dirfd, name, folder(store))
            if lease is not None:
                found.append(lease)
    finally:
        os.close(dirfd)
    return found


def live(store: layout.Store, *, now: float | None = None) -> dict[str, list[Lease]]:
    """The live leases of every leased entry key."""
    now = time.time() if now is None else now
    by_key: dict[str, list[Lease]] = {}
    for lease in leases(store):
        if lease.live(now):
            for key in lease.keys:
                by_key.setdefault(key, []).append(lease)
    return by_key


def sweep(store: layout.Store, *, now: float | None = None) -> int:
    """Remove lease files that lapsed; return how many."""
    now = time.time() if now is None else now
    removed = 0
    lapsed = [lease for lease in leases(store) if not lease.live(now)]
    if not lapsed:
        return 0
    dirfd = nofollow.open_dir(store.root, (layout.META, "inuse"))
    try:
        for lease in lapsed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{lease.token}.json", dir_fd=dirfd)
                removed += 1
    finally:
        os.close(dirfd)
    return removed


def _fields(lease: Lease) -> dict[str, Any]:
    return {k: getattr(lease, k) for k in Lease.__dataclass_fields__}


def _write(path: Path, lease: Lease) -> None:
    data = {**_fields(lease), "keys": list(lease.keys)}
    try:
        layout.write_atomic(path, json.dumps(data, sort_keys=True).encode())
    except OSError as exc:
        raise LeaseError(f"cannot write the in-use lease {path}: {exc.strerror}") from exc


_LEASE_LIMIT = 1024 * 1024
"""Bytes read at most from one lease file."""


def _read(dirfd: int, name: str, where: Path) -> Lease | None:
    path = where / name
    token = name[: -len(".json")]
    try:
        mtime = os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mtime
        raw = nofollow.read_at(dirfd, name, _LEASE_LIMIT, at=str(where))
    except FileNotFoundError:
        return None
    except OSError as exc:
        # A link, fifo, folder or huge file where a lease should be: not the agent's, but
        # what it protects is unknown, so it protects everything for a while (the policy).
        logger.warning("cannot read the in-use lease %s (%s); treating it as live", path, exc)
        return Lease(token, "unknown", "unknown", ("*",), "?", 0, mtime, mtime + MAX_TTL)
    try:
        data = json.loads(raw)
        return Lease(
            token=token,
            agent=str(data["agent"]),
            job=str(data["job"]),
            keys=tuple(str(k) for k in data["keys"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            acquired=float(data["acquired"]),
            expires=float(data["expires"]),
        )
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):
        # Half-understood (a newer agent's?) or damaged: keep protecting for a while.
        logger.warning("cannot parse the in-use lease %s; treating it as live", path)
        return Lease(token, "unknown", "unknown", ("*",), "?", 0, mtime, mtime + MAX_TTL)
