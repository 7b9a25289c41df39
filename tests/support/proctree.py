"""Processes as /proc shows them, for tests that must prove nothing outlives a kill.

A process is named by its pid and its start time (field 22 of ``/proc/PID/stat``), so a
pid the kernel reuses afterwards is never mistaken for the one recorded, and never
signalled. A zombie counts as gone: it runs nothing, and whether it is reaped is up to
whatever PID 1 the test runs under.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Proc:
    pid: int
    started: int
    cmdline: str


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "(comm)", which may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> list[Proc]:
    """Every live process below ``root`` (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None and stat[0] != "Z":
                parents.setdefault(stat[1], []).append(int(name))
    found: list[Proc] = []
    todo = list(parents.get(root, []))
    while todo:
        pid = todo.pop()
        stat = _stat(pid)
        if stat is not None:
            found.append(Proc(pid, stat[2], _cmdline(pid)))
        todo += parents.get(pid, [])
    return found


def alive(proc: Proc) -> bool:
    """Whether ``proc`` (that very process, not a reuse of its pid) still runs."""
    stat = _stat(proc.pid)
    return stat is not None and stat[0] != "Z" and stat[2] == proc.started


def survivors(procs: list[Proc], *, within: float) -> list[Proc]:
    """Those of ``procs`` still alive after waiting up to ``within`` seconds for all to go."""
    deadline = time.monotonic() + within
    while True:
        left = [p for p in procs if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def kill(procs: list[Proc]) -> None:
    """SIGKILL those of ``procs`` still alive (a test's cleanup), by their own pid."""
    for proc in procs:
        if alive(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
