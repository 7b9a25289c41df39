"""Signals that arrive before the event loop can handle them.

Policy: a SIGTERM or SIGHUP during the first few hundred milliseconds (while modules
import and the config loads) must not kill the process with a signal status: a sidecar
that exits non-zero gets its pod deleted. :func:`catch_early` records such signals; the
daemon replays them once its loop handlers are installed.
"""

from __future__ import annotations

import signal
from types import FrameType

_pending: list[signal.Signals] = []


def _record(signum: int, frame: FrameType | None) -> None:
    _pending.append(signal.Signals(signum))


def catch_early(signals: tuple[signal.Signals, ...]) -> None:
    """Record ``signals`` instead of acting on them until :func:`take_pending`."""
    for sig in signals:
        signal.signal(sig, _record)


def take_pending() -> list[signal.Signals]:
    """The signals recorded so far, oldest first; the record is cleared."""
    taken = list(_pending)
    _pending.clear()
    return taken
