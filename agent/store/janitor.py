"""The janitor: garbage collection, eviction to the budget and verification, one at a time.

Policy:
- one janitor at a time across every agent sharing the volume: each pass (periodic gc and
  budget eviction, or an operator's ``cache gc``/``evict``/``verify``) first takes the
  janitor lock ``<root>/.runner-agent/locks/janitor.lock`` through the configured lock
  backend, *without waiting*. A second janitor raises :class:`Busy` (the periodic one
  counts it as ``skipped``): 50 pods must not all walk the store at once, and one pass
  does the work for all of them;
- the janitor never creates a store: with no ``.runner-agent/format`` there is nothing to
  do, and a store of a newer format is refused, as installs refuse it;
- gc (:mod:`agent.store.collecting`) removes what dead installs left behind;
- every pass is appended to ``<root>/.runner-agent/logs/janitor.log`` (one JSON object a
  line: agent, operation, start, end, result) while the lock is held (appended ``O_NOFOLLOW``
  to a regular file only, see :mod:`agent.store.nofollow`), so who did what,
  and that passes never overlapped, can be read back;
- counts (passes by result, entries evicted) and the running total of the store's size,
  download cache included (:class:`~agent.store.inventory.Tally`), live on the
  :class:`Janitor` object, which the daemon's metrics read at scrape time. Everything
  here blocks: call it from a thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.store import (
    collecting,
    evicting,
    inventory,
    layout,
    locks,
    nofollow,
    verifying,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
RESULTS = ("ok", "skipped", "failed")
HISTORY_KEEP = 500
_HISTORY_LIMIT = 16 * 1024 * 1024
"""Bytes of the janitor log read back at most (a planted huge file is not read)."""


class Busy(layout.StoreError):
    """Another janitor holds the janitor lock; the message names it."""


def default_agent_id() -> str:
    """``host/pid``: the pod name and process, unique among agents sharing a volume."""
    return f"{socket.gethostname()}/{os.getpid()}"


def lock_path(store: layout.Store) -> Path:
    """The janitor lock file (no ``@`` in it, so no entry's lock can be named so)."""
    return store.meta / "locks" / "janitor.lock"


def _holder(store: layout.Store) -> str:
    path = lock_path(store)
    lease = path.with_name(path.name + ".lease")
    return locks.describe_lease(lease) if lease.is_file() else locks.describe_holder(path)


@contextlib.contextmanager
def exclusive(store: layout.Store, backend: locks.LockBackend, *, what: str) -> Iterator[None]:
    """Hold the janitor lock for the ``with`` block, or raise :class:`Busy` at once."""
    entered = False
    try:
        with backend.hold(lock_path(store), what=f"the janitor lock ({what})", timeout=0):
            entered = True
            yield
    except locks.LockTimeout as exc:
        if entered:
            raise
        raise Busy(
            f"another janitor is working on the store at {store.root} ({_holder(store)}); "
            "one janitor serves every agent on the volume: retry when it has finished"
        ) from exc


def exists(store: layout.Store) -> bool:
    """Whether there is a store at all (the janitor never creates one)."""
    path = store.meta / "format"
    try:
        text = nofollow.read(path, 64).decode("ascii").strip()
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError) as exc:
        raise layout.FormatError(f"cannot read the store format at {path}: {exc}") from exc
    if text.isdigit() and int(text) > layout.FORMAT:
        raise layout.FormatError(
            f"the store at {store.root} has format {text}, newer than this agent's "
            f"{layout.FORMAT}: upgrade this agent before it cleans that store"
        )
    return True


@dataclass
class Pass:
    """One periodic pass: gc, then eviction to the budget."""

    collected: collecting.Collected
    evicted: evicting.Evicted

    def to_data(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"gc": self.collected.to_data(), "evict": self.evicted.to_data()}


class Janitor:
    """One agent's janitor for one store: its operations, counts and running total."""

    def __init__(
        self,
        store: layout.Store,
        backend: locks.LockBackend,
        *,
        budget: Callable[[], int],
        agent_id: str | None = None,
        min_idle: float = evicting.MIN_IDLE,
    ) -> None:
        self.store = store
        self.backend = backend
        self.budget = budget
        self.agent_id = agent_id or default_agent_id()
        self.min_idle = min_idle
        self.tally = inventory.Tally(store)
        self.runs = dict.fromkeys(RESULTS, 0)
        self.evictions = 0
        self._count = threading.Lock()

    def periodic(self) -> Pass | None:
        """gc and eviction to the budget; ``None`` with no store; :class:`Busy` counted
        as ``skipped`` and returned as ``None`` too (the other janitor does the work)."""
        try:
            if not exists(self.store):
                return None
            return self._op("periodic", self._periodic)
        except Busy as exc:
            logger.debug("janitor pass skipped: %s", exc)
            return None
        finally:
            self.refresh()

    def _periodic(self) -> Pass:
        collected = collecting.gc(self.store, backend=self.backend)
        evicted = self._evict(int(self.budget()))
        return Pass(collected, evicted)

    def gc(self) -> collecting.Collected:
        """``cache gc``; :class:`Busy` when another janitor runs."""
        return self._op("gc", lambda: collecting.gc(self.store, backend=self.backend))

    def evict(self, to: int) -> evicting.Evicted:
        """``cache evict --to``; :class:`Busy` when another janitor runs."""
        return self._op("evict", lambda: self._evict(to))

    def verify(self, *, repair: bool) -> verifying.Verified:
        """``cache verify [--repair]``; :class:`Busy` when another janitor runs."""
        return self._op(
            "repair" if repair else "verify",
            lambda: verifying.verify(self.store, repair=repair, backend=self.backend),
        )

    def refresh(self) -> inventory.Totals:
        """Re-read the running total (receipts that changed, and the downloads)."""
        return self.tally.refresh()

    def _evict(self, to: int) -> evicting.Evicted:
        done = evicting.evict(self.store, to=to, backend=self.backend, min_idle=self.min_idle)
        with self._count:
            # Entries only (runner_agent_evictions_total): a download is a cache of a cache.
            self.evictions += sum(1 for r in done.removed if r["kind"] == "entry")
        if not done.reached:
            logger.warning(
                "the store holds %s after eviction, over the target of %s: what is left "
                "is in use, recently used, being installed or not the agent's",
                evicting.human(done.after),
                evicting.human(to),
                extra={"skipped": done.skipped[:20]},
            )
        return done

    def _op(self, what: str, work: Callable[[], T]) -> T:
        if not exists(self.store):
            raise layout.NoStore(f"there is no store at {self.store.root} (no install yet)")
        started = time.time()
        try:
            with exclusive(self.store, self.backend, what=f"{what} by {self.agent_id}"):
                try:
                    outcome = work()
                except Exception as exc:
                    self._record(what, started, "failed", str(exc))
                    raise
                self._record(what, started, "ok", "")
        except Busy:
            self._counted("skipped")
            raise
        except Exception:
            self._counted("failed")
            raise
        self._counted("ok")
        if what != "periodic":
            self.refresh()
        return outcome

    def _counted(self, result: str) -> None:
        with self._count:
            self.runs[result] += 1

    def _record(self, what: str, started: float, result: str, error: str) -> None:
        line = {
            "agent": self.agent_id,
            "op": what,
            "started": started,
            "finished": time.time(),
            "result": result,
            "error": error,
        }
        path = history_path(self.store)
        try:
            # Reached from the root without following links, appended O_NOFOLLOW: a link
            # planted at logs/ or at janitor.log is refused, never written through.
            dirfd = nofollow.open_dir(self.store.root, (layout.META, "logs"), create=True)
        except OSError as exc:
            logger.warning("cannot append to the janitor log %s: %s", path, exc.strerror)
            return
        try:
            at = str(path.parent)
            size = nofollow.append_at(dirfd, path.name, (json.dumps(line) + "\n").encode(), at=at)
            if size > HISTORY_KEEP * 400:
                # Only the tail is read: a big file planted or grown here must not be
                # loaded whole into the agent's memory.
                tail = HISTORY_KEEP * 800
                fd = nofollow.open_file(dirfd, path.name, os.O_RDONLY, at=at)
                try:
                    raw = os.pread(fd, tail, max(0, size - tail))
                finally:
                    os.close(fd)
                lines = raw.decode("utf-8", "replace").splitlines()
                if size > tail:
                    lines = lines[1:]  # the first line read may be cut
                kept = lines[-HISTORY_KEEP:]
                nofollow.write_atomic_at(dirfd, path.name, ("\n".join(kept) + "\n").encode())
        except OSError as exc:
            logger.warning("cannot append to the janitor log %s: %s", path, exc.strerror)
        finally:
            os.close(dirfd)


def history_path(store: layout.Store) -> Path:
    """The janitor's log of passes."""
    return store.meta / "logs" / "janitor.log"


def history(store: layout.Store) -> list[dict[str, Any]]:
    """The janitor's log of passes, oldest first (lines that do not parse are skipped;
    a log that is not a regular file, or is over the bound, reads as empty)."""
    try:
        raw = nofollow.read(history_path(store), _HISTORY_LIMIT)
    except FileNotFoundError:
        return []
    except OSError as exc:  # a link, fifo or huge file planted at its name
        logger.warning("cannot read the janitor log: %s", exc.strerror)
        return []
    lines = raw.decode("utf-8", "replace").splitlines()
    out = []
    for line in lines:
        with contextlib.suppress(ValueError, RecursionError):
            data = json.loads(line)
            if isinstance(data, dict):
                out.append(data)
    return out
