"""Installs in worker processes, at a lower CPU priority than the agent's event loop.

Policy: extracting and hashing a large archive is CPU work that holds Python's GIL; in a
thread of the agent it would hold off the event loop (and /healthz) for milliseconds at
a time. Installs therefore run in a small pool of spawned processes (spawn, never fork:
the agent is threaded), each niced (``os.nice(nice)``) so the kernel runs the loop first
when both want a core.

- Progress events come back through one queue per pool, read by one thread of the
  agent and handed to the listener of the install they belong to; each install ends its
  events with an end marker, so none arrives after its result is handed back.
- Only :class:`~agent.install.protocol.InstallError` crosses back; anything else a worker
  raises is wrapped into one first (other exceptions may not survive pickling, and one
  that fails to unpickle would break the pool).
- A worker that dies (the OOM killer, a signal) breaks a ``ProcessPoolExecutor`` for
  good: the pool is then replaced, with a fresh queue (the dead worker may have died
  holding the old one's lock), and the install that saw it fails with a clear error.
- At shutdown the pool is closed without waiting and busy workers are terminated; each
  worker kills the process groups of the commands it started (pip, npm, a sandbox)
  first. An install is crash-safe by design (see :mod:`agent.install.protocol`).
- A worker dies with the agent, however the agent ends (``kill -9`` included): a thread
  of the worker waits for the end of the pipe that multiprocessing's spawn leaves
  between the two (``parent_process().sentinel``, whose other end only the agent holds;
  the kernel closes it when the agent dies), then kills the worker's commands and the
  worker, before any install it was running can publish. The watch starts before the
  worker takes an install, and an agent already dead by then reads as an ended pipe, so
  no window is left. It is a pipe and not ``PR_SET_PDEATHSIG``: that signal follows the
  thread that spawned the worker rather than the agent, and a SIGKILL from the kernel
  would leave the worker's commands running. multiprocessing's resource tracker, which
  the agent starts with its first worker, reads a pipe that only the agent and its
  workers hold, so it exits once they are gone (unlinking the queues' semaphores).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import threading
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.queues import SimpleQueue
from pathlib import Path
from typing import Any

from agent.install import protocol
from agent.kits import procs, progress
from agent.platform import plans as wire
from agent.store import entries, layout, locks

logger = logging.getLogger(__name__)

_END = "__end__"
_END_WAIT = 2.0
_AGENT_GONE = 70  # EX_SOFTWARE; nobody reads it, the agent is gone
_EVENTS: SimpleQueue[Any] | None = None


def _on_term(signum: int, frame: object) -> None:
    procs.kill_all()
    os._exit(128 + signum)


def _start_worker(events: SimpleQueue[Any], nice: int) -> None:
    global _EVENTS
    _EVENTS = events
    # A spawned worker re-imports the agent's main module with the agent's argv, so the
    # collector pause meant for ``serve``'s startup (agent.kits.gcpause) reaches it too;
    # a worker lives as long as the agent and must collect its cycles.
    gc.enable()
    signal.signal(signal.SIGTERM, _on_term)
    _watch_agent()
    with contextlib.suppress(OSError):
        os.nice(nice)


def _watch_agent() -> None:
    parent = multiprocessing.parent_process()
    if parent is None:  # not a spawned child: nothing to watch
        return
    threading.Thread(
        target=_end_with_agent, args=(parent.sentinel,), name="agent watch", daemon=True
    ).start()


def _end_with_agent(sentinel: int) -> None:
    # The agent never writes on this pipe once the worker has read its start data, so a
    # read returns only at its end: when the agent is gone. Nothing is left to report to,
    # and nobody would clean up after an install that went on.
    try:
        while os.read(sentinel, 4096):
            pass
    except OSError:
        logger.warning("an install worker cannot watch for the agent's end", exc_info=True)
        return  # unwatched, rather than a healthy install killed
    procs.kill_all()
    os._exit(_AGENT_GONE)


def _install(
    token: str,
    root: str,
    step: wire.ToolStep,
    lock: tuple[str, float],
    options: protocol.Options,
) -> entries.Installed:
    events = _EVENTS
    assert events is not None

    def forward(event: str, data: dict[str, Any]) -> None:
        events.put((token, event, data))

    backend = locks.backend(lock[0], lease_ttl=lock[1])
    try:
        with progress.listening(forward):
            return protocol.install(
                layout.Store(Path(root)), step, lock_backend=backend, options=options
            )
    except protocol.InstallError:
        raise
    except Exception as exc:
        what = f"{step.get('id')} {step.get('version')}"
        raise protocol.InstallError(what, "worker", f"{type(exc).__name__}: {exc}") from None
    finally:
        events.put((token, _END, {}))


class WorkerPool:
    """A pool of install processes; :meth:`install` is awaited on the event loop."""

    def __init__(self, size: int, *, nice: int = 10) -> None:
        self.size = size
        self._nice = nice
        self._context = multiprocessing.get_context("spawn")
        self._pool: ProcessPoolExecutor | None = None
        self._listeners: dict[str, progress.Listener] = {}
        self._ends: dict[str, threading.Event] = {}
        self._closed = False
        self.replaced = 0
        """How many times a broken pool was replaced (a worker died)."""

    async def install(
        self,
        root: str,
        step: wire.ToolStep,
        *,
        lock: tuple[str, float],
        options: protocol.Options,
        listener: progress.Listener,
    ) -> entries.Installed:
        """Install ``step`` into the store at ``root`` in a worker; progress to ``listener``
        (called from the reader thread)."""
        pool = self._started()
        token = uuid.uuid4().hex
        ended = threading.Event()
        self._listeners[token] = listener
        self._ends[token] = ended
        loop = asyncio.get_running_loop()
        try:
            try:
                return await loop.run_in_executor(pool, _install, token, root, step, lock, options)
            except BrokenProcessPool as exc:
                self._replace(pool)
                what = f"{step.get('id')} {step.get('version')}"
                raise protocol.InstallError(
                    what,
                    "worker",
                    "the install's worker process died (out of memory, or killed); the "
                    "next try starts a fresh one",
                ) from exc
            finally:
                # Events travel apart from the result: take the last ones before the
                # listener goes (the worker marks its end).
                await loop.run_in_executor(None, ended.wait, _END_WAIT)
        finally:
            self._listeners.pop(token, None)
            self._ends.pop(token, None)

    def close(self) -> None:
        """Stop the pool now, for good; busy workers are terminated (installs are
        crash-safe) and no new one starts."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            _stop(pool)

    def _started(self) -> ProcessPoolExecutor:
        if self._closed:
            raise protocol.InstallError("an install", "worker", "the agent is stopping")
        if self._pool is None:
            events: SimpleQueue[Any] = self._context.SimpleQueue()
            self._pool = ProcessPoolExecutor(
                max_workers=self.size,
                mp_context=self._context,
                initializer=_start_worker,
                initargs=(events, self._nice),
            )
            # One reader per queue; it is a daemon thread, left blocked on a queue whose
            # pool is gone (a dead worker may hold its lock, so nothing is sent to it).
            threading.Thread(
                target=self._read, args=(events,), name="install progress reader", daemon=True
            ).start()
        return self._pool

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            self._pool = None
            self.replaced += 1
            logger.warning("an install worker died; the worker pool will be replaced")
        _stop(broken)

    def _read(self, events: SimpleQueue[Any]) -> None:
        while True:
            try:
                token, event, data = events.get()
            except (EOFError, OSError, ValueError):
                return
            if event == _END:
                ended = self._ends.get(token)
                if ended is not None:
                    ended.set()
                continue
            listener = self._listeners.get(token)
            if listener is not None:
                try:
                    listener(event, data)
                except Exception:
                    logger.exception("an install progress listener failed")


def _stop(pool: ProcessPoolExecutor) -> None:
    # Private, but the only handle on the processes: shutdown() alone would wait for the
    # running installs, or leave them running.
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=5)
