"""The cyclic garbage collector, paused while ``serve`` starts.

Policy: the imports and config models before the probe listener binds create ~50,000
long-lived objects (modules, classes, pydantic schemas) and almost no cyclic garbage, yet
the collector would run ~120 times over them first, one full pass among them: a sizeable
share of the time to the first /healthz, spent finding nothing. ``agent.cli`` pauses it
before its imports for ``serve``; the daemon resumes it as soon as the probe listener is
bound (or its first bind failed), freezing what startup built so that later collections,
on the event loop too, never walk it again. Reference counting frees everything else as
usual meanwhile.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Disable the collector until :func:`resume` (a no-op if it is already off)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze every object built so far and re-enable the collector, if :func:`pause` did."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
