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
- gc removes staging folders whose entry lock is free (an install holds the lock while it
  stages, so a free lock means its process died), the renamed-away trash of killed
  publishes and evictions (same rule), ``.partial`` downloads untouched for an hour,
  lapsed in-use leases, and downloaded archives no receipt names any more (untouched for
  :data:`DOWNLOAD_GRACE`, so an install between its download and its publish keeps its
  archive; if any receipt cannot be read, every download is kept). It keeps staging
  folders of running installs, and anything whose name it does not recognise;
- every pass is appended to ``<root>/.runner-agent/logs/janitor.log`` (one JSON object a
  line: agent, operation, start, end, result) while the lock is held, so who did what,
  and that passes never overlapped, can be read back;
- counts (passes by result, entries evicted) and the running total of the store's size
  (:class:`~agent.store.inventory.Tally`) live on the :class:`Janitor` object, which the
  daemon's metrics read at scrape time. Everything here blocks: call it from a thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agent.store import (
    evicting,
    inuse,
    inventory,
    layout,
    locks,
    nofollow,
    publishing,
    receipts,
    verifying,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
RESULTS = ("ok", "skipped", "failed")
HISTORY_KEEP = 500
_STAGED = re.compile(r"^(?P<key>[^@/]+@[^@/]+@[^@/]+)\.[0-9a-f]{32}$")


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
class Collected:
    """What one gc pass removed and kept."""

    staging_removed: list[str] = field(default_factory=list)
    staging_kept: list[str] = field(default_factory=list)
    """Staging folders of installs still running (their entry lock is held)."""
    partials_removed: int = 0
    leases_removed: int = 0
    downloads_removed: int = 0
    download_bytes_removed: int = 0
    unknown: list[str] = field(default_factory=list)
    """Names in the staging folder the agent does not recognise (left alone)."""

    def to_data(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "staging_removed": self.staging_removed,
            "staging_kept": self.staging_kept,
            "partials_removed": self.partials_removed,
            "leases_removed": self.leases_removed,
            "downloads_removed": self.downloads_removed,
            "download_bytes_removed": self.download_bytes_removed,
            "unknown": self.unknown,
        }


def gc(store: layout.Store, *, backend: locks.LockBackend) -> Collected:
    """Collect garbage (see the module's policy); the caller holds the janitor lock."""
    result = Collected()
    keys: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        fd = nofollow.open_dir(store.root, (layout.META, "staging"))
        try:
            for name in nofollow.names(fd):
                match = _STAGED.match(name)
                if match is None:
                    result.unknown.append(name)
                else:
                    keys.setdefault(match["key"], []).append(name)
        finally:
            os.close(fd)
    for name, version, child in _trash(store):  # trash beside entries: .<leaf>.stale-*
        leaf, _, _ = child[1:].partition(".stale-")
        keys.setdefault(f"{name}@{version}@{leaf}", [])
    for key, staged in sorted(keys.items()):
        try:
            entry = store.entry(*key.split("@"))
            with backend.hold(entry.lock, what=f"collecting {key}", timeout=0):
                publishing.sweep(store, entry)
            result.staging_removed += staged
        except locks.LockTimeout:
            result.staging_kept += staged
        except layout.StoreError:
            result.unknown += staged
    now = time.time()
    result.partials_removed = layout.sweep_partials(store)
    result.leases_removed = inuse.sweep(store, now=now)
    result.downloads_removed, result.download_bytes_removed = _unreferenced_downloads(store, now)
    return result


DOWNLOAD_GRACE = 3600.0
"""Seconds an unreferenced download is kept after its last write (an install in flight)."""


def _unreferenced_downloads(store: layout.Store, now: float) -> tuple[int, int]:
    """Remove downloaded archives that no receipt names; (files, bytes) removed."""
    referenced: set[str] = set()
    try:
        for key in _receipt_names(store):
            receipt = receipts.read_file(store.meta / "receipts" / key)
            if receipt is not None:
                referenced.update(source.sha256 for source in receipt.sources)
    except layout.StoreError:
        return 0, 0  # what is in use is unknown: keep every download
    removed = size = 0
    try:
        top = nofollow.open_dir(store.root, (layout.META, "downloads"))
    except OSError:
        return 0, 0
    try:
        for sub in nofollow.subdirs(top):
            if len(sub) != 2:
                continue
            with contextlib.suppress(OSError):
                fd = nofollow.open_below(top, (sub,))
                try:
                    for name in nofollow.names(fd):
                        if name.startswith(".") or len(name) != 64 or name in referenced:
                            continue
                        with contextlib.suppress(OSError):
                            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                            if now - st.st_mtime >= DOWNLOAD_GRACE:
                                nofollow.remove_at(fd, name)
                                removed += 1
                                size += st.st_size
                finally:
                    os.close(fd)
    finally:
        os.close(top)
    return removed, size


def _receipt_names(store: layout.Store) -> list[str]:
    try:
        fd = nofollow.open_dir(store.root, (layout.META, "receipts"))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise receipts.BadReceipt(f"cannot list the receipts: {exc.strerror}") from exc
    try:
        return [n for n in nofollow.names(fd) if n.endswith(".json") and n[0] != "."]
    finally:
        os.close(fd)


def _trash(store: layout.Store) -> Iterator[tuple[str, str, str]]:
    """``(tool, version, name)`` of every ``.<leaf>.stale-*`` beside entries, reached by
    descriptor through real folders only."""
    try:
        top = nofollow.open_root(store.root)
    except OSError:
        return
    try:
        for name in _dirs(top):
            try:
                tool = nofollow.open_below(top, (name,))
            except OSError:
                continue
            try:
                for version in _dirs(tool):
                    with contextlib.suppress(OSError):
                        fd = nofollow.open_below(tool, (version,))
                        try:
                            children = nofollow.names(fd)
                        finally:
                            os.close(fd)
                        for child in children:
                            if child.startswith(".") and ".stale-" in child:
                                yield name, version, child
            finally:
                os.close(tool)
    finally:
        os.close(top)


def _dirs(dirfd: int) -> list[str]:
    try:
        return [n for n in nofollow.subdirs(dirfd) if n[0] != "."]
    except OSError:
        return []


@dataclass
class Pass:
    """One periodic pass: gc, then eviction to the budget."""

    collected: Collected
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
        collected = gc(self.store, backend=self.backend)
        evicted = self._evict(int(self.budget()))
        return Pass(collected, evicted)

    def gc(self) -> Collected:
        """``cache gc``; :class:`Busy` when another janitor runs."""
        return self._op("gc", lambda: gc(self.store, backend=self.backend))

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
        """Re-read the running total (receipts that changed only)."""
        return self.tally.refresh()

    def _evict(self, to: int) -> evicting.Evicted:
        done = evicting.evict(self.store, to=to, backend=self.backend, min_idle=self.min_idle)
        with self._count:
            self.evictions += len(done.removed)
        if not done.reached:
            logger.warning(
                "the store holds %d bytes after eviction, over the target of %d: what is left "
                "is in use, recently used, being installed or not the agent's",
                done.after,
                to,
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
                raw = nofollow.read_at(dirfd, path.name, size * 2, at=at)
                kept = raw.decode("utf-8", "replace").splitlines()[-HISTORY_KEEP:]
                nofollow.write_atomic_at(dirfd, path.name, ("\n".join(kept) + "\n").encode())
        except OSError as exc:
            logger.warning("cannot append to the janitor log %s: %s", path, exc.strerror)
        finally:
            os.close(dirfd)


def history_path(store: layout.Store) -> Path:
    """The janitor's log of passes."""
    return store.meta / "logs" / "janitor.log"


def history(store: layout.Store) -> list[dict[str, Any]]:
    """The janitor's log of passes, oldest first (lines that do not parse are skipped)."""
    try:
        raw = nofollow.read(history_path(store), HISTORY_KEEP * 800)
    except FileNotFoundError:
        return []
    lines = raw.decode("utf-8", "replace").splitlines()
    out = []
    for line in lines:
        with contextlib.suppress(ValueError, RecursionError):
            data = json.loads(line)
            if isinstance(data, dict):
                out.append(data)
    return out
