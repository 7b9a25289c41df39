"""Draining a host-mode runner whose GPU is unhealthy: SIGINT to ``Runner.Listener``.

Policy: only with ``gpu.drain_runner`` (host mode, where a runner stays registered
across jobs; an ephemeral ARC pod runs one job, and there the hook's refusal and
readiness are what count). SIGINT stops the runner's listener: it takes no new job, and
a job still running is cancelled by the runner (on a sick GPU it would fail anyway).
The process is found by its name in ``/proc/<pid>/comm`` (``gpu.drain_process``,
``Runner.Listener`` by default: 15 characters, exactly what the kernel keeps), among the
processes the agent can see; every one is signalled, once per verdict, so an agent that
sees several runners drains them all. Nothing is read past ``comm``, and a process that
went away meanwhile is skipped.
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


def listeners(name: str = NAME, proc: Path = Path("/proc")) -> list[int]:
    """The pids of processes named ``name`` this agent can see."""
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
                if f.read(64).rstrip(b"\n") == name.encode():
                    found.append(int(entry.name))
    return found


def drain(reason: str, name: str = NAME, proc: Path = Path("/proc")) -> list[int]:
    """SIGINT every process named ``name``; the pids signalled."""
    signalled = []
    for pid in listeners(name, proc):
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGINT)
        except OSError as exc:
            logger.warning("cannot drain %s (pid %d): %s", name, pid, exc)
            continue
        signalled.append(pid)
    if signalled:
        logger.warning(
            "drained the runner (SIGINT to %s, pid %s): it takes no new job, because %s",
            name,
            ", ".join(map(str, signalled)),
            reason,
        )
    else:
        logger.warning("gpu.drain_runner is set but no %s process is visible", name)
    return signalled
