"""Installs in worker processes, at a lower CPU priority than the agent's event loop.

Policy: extracting and hashing a large archive is CPU work that holds Python's GIL; in a
thread of the agent it would hold off the event loop (and /healthz) for milliseconds at
a time. Installs therefore run in a small pool of spawned processes (spawn, never fork:
the agent is threaded), each niced (``os.nice(nice)``) so the kernel runs the loop first
when both want a core. Progress events come back through one queue, read by one thread
of the agent and handed to the listener of the install they belong to. Workers are
started on the first install and live as long as the pool; at shutdown the pool is
closed without waiting, and the workers still busy are terminated: an install is
crash-safe by design (see :mod:`agent.store.installing`), so the next one finishes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.queues import SimpleQueue
from pathlib import Path
from typing import Any

from agent.store import installing, layout, locks, progress

logger = logging.getLogger("agent.store")

_EVENTS: SimpleQueue[Any] | None = None


def _start_worker(events: SimpleQueue[Any], nice: int) -> None:
    global _EVENTS
    _EVENTS = events
    with contextlib.suppress(OSError):
        os.nice(nice)


def _install(
    token: str,
    root: str,
    step: dict[str, Any],
    lock: tuple[str, float],
    options: installing.Options,
) -> installing.Installed:
    events = _EVENTS
    assert events is not None

    def forward(event: str, data: dict[str, Any]) -> None:
        events.put((token, event, data))

    backend = locks.backend(lock[0], lease_ttl=lock[1])
    with progress.listening(forward):
        return installing.install(
            layout.Store(Path(root)), step, lock_backend=backend, options=options
        )


class WorkerPool:
    """A pool of install processes; :meth:`install` is awaited on the event loop."""

    def __init__(self, size: int, *, nice: int = 10) -> None:
        self.size = size
        self._nice = nice
        self._context = multiprocessing.get_context("spawn")
        self._events: SimpleQueue[Any] = self._context.SimpleQueue()
        self._pool: ProcessPoolExecutor | None = None
        self._listeners: dict[str, progress.Listener] = {}
        self._reader: threading.Thread | None = None

    async def install(
        self,
        root: str,
        step: dict[str, Any],
        *,
        lock: tuple[str, float],
        options: installing.Options,
        listener: progress.Listener,
    ) -> installing.Installed:
        """Install ``step`` into the store at ``root`` in a worker; progress to ``listener``
        (called from the reader thread)."""
        pool = self._started()
        token = uuid.uuid4().hex
        self._listeners[token] = listener
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(pool, _install, token, root, step, lock, options)
        finally:
            self._listeners.pop(token, None)

    def close(self) -> None:
        """Stop the pool now; busy workers are terminated (installs are crash-safe)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):
                process.terminate()
        for process in processes:
            with contextlib.suppress(Exception):
                process.join(timeout=5)
        self._events.put(None)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.size,
                mp_context=self._context,
                initializer=_start_worker,
                initargs=(self._events, self._nice),
            )
            self._reader = threading.Thread(
                target=self._read, name="install progress reader", daemon=True
            )
            self._reader.start()
        return self._pool

    def _read(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            token, event, data = item
            listener = self._listeners.get(token)
            if listener is not None:
                try:
                    listener(event, data)
                except Exception:
                    logger.exception("an install progress listener failed")
