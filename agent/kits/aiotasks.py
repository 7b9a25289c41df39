"""Guarded background tasks.

Policy: every long-lived coroutine runs under :func:`guard`, which logs
"<name> has failed" with the traceback, or "<name> has finished unexpectedly" when a
task meant to run forever returns. A guarded task never takes the process down; the
daemon decides what a dead task means (usually: a readiness condition goes false).
Cancellation is the normal way to stop a guarded task and is not logged as a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


async def guard(
    coro: Coroutine[Any, Any, Any],
    *,
    name: str,
    forever: bool = True,
    log: logging.Logger = logger,
) -> None:
    """Await ``coro``, logging its failure (or its unexpected end) by ``name``."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s has failed", name, extra={"task": name})
    else:
        if forever:
            log.error("%s has finished unexpectedly", name, extra={"task": name})


def create_guarded_task(
    coro: Coroutine[Any, Any, Any],
    *,
    name: str,
    forever: bool = True,
) -> asyncio.Task[None]:
    """Start ``coro`` as a named task under :func:`guard`."""
    return asyncio.create_task(guard(coro, name=name, forever=forever), name=name)


async def stop_tasks(tasks: list[asyncio.Task[None]], *, timeout: float) -> None:  # noqa: ASYNC109
    """Cancel ``tasks`` and wait for them, at most ``timeout`` seconds in all.

    Tasks that ignore cancellation past the timeout are logged and abandoned: shutdown
    must finish inside the pod's grace period whatever a task does.
    """
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, still = await asyncio.wait(pending, timeout=timeout)
    for task in still:
        logger.error("%s did not stop within %.1f s; abandoning it", task.get_name(), timeout)
