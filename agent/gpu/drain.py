"""Draining a host-mode runner whose GPU is unhealthy: SIGINT to ``Runner.Listener``.

Policy: only with ``gpu.drain_runner`` (host mode, where a runner stays registered
across jobs; an ephemeral ARC pod runs one job, and there the hook's refusal and
readiness are what count). The runner's listener treats SIGINT as "finish the current
job, then exit": no job is cut short, and the runner takes no new one. The process is
found by its name in ``/proc/<pid>/comm`` (``Runner.Listener``, 15 characters, exactly
what the kernel keeps), among processes of the agent's own namespace only; each is
signalled once per verdict. Nothing is read past ``comm``, and a process that went
away meanwhile is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

logger = logging.getLogger(__name__)

NAME = "Runner.Listener"
MAX_PROCESSES = 100_000


def listeners(proc: Path = Path("/proc")) -> list[int]:
    """The pids of ``Runner.Listener`` processes this agent can see."""
    found = []
    try:
        entries = os.scandir(proc)
    except OSError:
        return []
    with entries:
        for count, entry in enumerate(entries):
            if count >= MAX_PROCESSES or not entry.name.isdigit():
                continue
            with (
                contextlib.suppress(OSError),
                open(os.path.join(entry.path, "comm"), "rb") as f,
            ):
                if f.read(64).rstrip(b"\n") == NAME.encode():
                    found.append(int(entry.name))
    return found


def drain(reason: str, proc: Path = Path("/proc")) -> list[int]:
    """SIGINT every ``Runner.Listener``; the pids signalled."""
    signalled = []
    for pid in listeners(proc):
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGINT)
        except OSError as exc:
            logger.warning("cannot drain Runner.Listener (pid %d): %s", pid, exc)
            continue
        signalled.append(pid)
    if signalled:
        logger.warning(
            "drained the runner (SIGINT to Runner.Listener, pid %s): it finishes its job "
            "and takes no new one, because %s",
            ", ".join(map(str, signalled)),
            reason,
        )
    else:
        logger.warning("gpu.drain_runner is set but no Runner.Listener process is visible")
    return signalled
