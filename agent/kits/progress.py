"""Progress of an install, told to whoever listens in the current context.

Policy: the engines report through a context variable rather than a callback in every
signature: an install runs in a thread that the caller starts with its listener set
(``asyncio.to_thread`` copies the context), and code that nobody listens to pays one
``ContextVar.get``. Events (``data`` in brackets):

- ``waiting-for-lock`` [holder, waited]: another agent installs the same entry;
- ``downloading`` [url, bytes, total]: at most every 0.25 s per download, and at its end;
- ``extracting``, ``checking``, ``running`` [method]: a step starts;

A listener that raises is logged and ignored: progress must never fail an install.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

logger = logging.getLogger(__name__)

Listener = Callable[[str, dict[str, Any]], None]
_listener: ContextVar[Listener | None] = ContextVar("runner_agent_progress", default=None)
_feature: ContextVar[str | None] = ContextVar("runner_agent_progress_feature", default=None)
EVERY = 0.25


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send this context's progress events to ``listener`` for the ``with`` block."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


@contextlib.contextmanager
def about(feature: str) -> Iterator[None]:
    """Tag this context's events with ``feature`` (installs of several run at once)."""
    token = _feature.set(feature)
    try:
        yield
    finally:
        _feature.reset(token)


def active() -> bool:
    """Whether anyone listens (lets callers skip building event data)."""
    return _listener.get() is not None


def report(event: str, **data: Any) -> None:
    """Tell the listener, if any, that ``event`` happened."""
    listener = _listener.get()
    if listener is None:
        return
    feature = _feature.get()
    if feature is not None:
        data.setdefault("feature", feature)
    try:
        listener(event, data)
    except Exception:
        logger.exception("a progress listener failed on %s", event)


class ByteCounter:
    """Counts a download's bytes and reports them, throttled."""

    def __init__(self, url: str, total: int | None) -> None:
        self.url = url
        self.total = total
        self.bytes = 0
        self._last = 0.0

    def add(self, count: int) -> None:
        """Count ``count`` more bytes."""
        self.bytes += count
        now = time.monotonic()
        if now - self._last >= EVERY:
            self._last = now
            report("downloading", url=self.url, bytes=self.bytes, total=self.total)

    def finish(self) -> None:
        """Report the final count."""
        report("downloading", url=self.url, bytes=self.bytes, total=self.total)
