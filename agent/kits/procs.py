"""Running one external command to completion: the step executor every install uses.

Policy:
- argv lists only, never a shell string; stdin is /dev/null, so nothing can wait on a
  prompt;
- the command gets its own session (process group): a timeout, or the caller giving up,
  kills the whole group, so a grandchild holding the output pipe can never keep the
  step alive after its deadline;
- output (stdout and stderr merged, in order) is streamed line by line to an optional
  callback as it arrives (a log, a progress stream) and the last ``tail`` bytes are kept
  for the error message and the install log;
- it blocks: callers on the event loop run it in a thread. The calling thread stays in
  the call until the command is reaped (or killed), so a parent-death signal the command
  sets for itself (which follows the thread that started it) fires only when this
  process dies;
- a ``watch`` callback, called about once a second and after each chunk of output, may
  end the command by raising (a limit it enforces); ``before_kill`` is given the pid of a
  command that is still running when the call ends, to stop what the group kill cannot
  reach (a sandbox's namespace init).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TAIL = 64 * 1024
_KILL_WAIT = 5.0
_DRAIN = 2.0
_LIVE: set[int] = set()
_LIVE_LOCK = threading.Lock()


def kill_all() -> None:
    """SIGKILL the process group of every command still running in this process (a
    worker that is being terminated must not leave its pip or npm behind)."""
    with _LIVE_LOCK:
        groups = list(_LIVE)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


class ProcError(Exception):
    """The command could not be started, or it did not finish in time."""


@dataclass(frozen=True)
class Finished:
    """How a command ended: its exit status (negative: killed by that signal) and output."""

    argv: tuple[str, ...]
    returncode: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether it exited 0."""
        return self.returncode == 0

    def describe(self, limit: int = 800) -> str:
        """One line for an error: the command, how it ended, and the end of its output."""
        ended = (
            f"was killed by signal {-self.returncode}"
            if self.returncode < 0
            else f"exited {self.returncode}"
        )
        tail = self.output.strip()[-limit:]
        shown = " ".join(self.argv[:4]) + (" ..." if len(self.argv) > 4 else "")
        return f"{shown} {ended}" + (f": {tail}" if tail else " with no output")


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | str | None = None,
    timeout: float,
    on_line: Callable[[str], None] | None = None,
    tail: int = TAIL,
    watch: Callable[[], None] | None = None,
    before_kill: Callable[[int], None] | None = None,
) -> Finished:
    """Run ``argv`` to completion and return how it ended (a non-zero exit is not raised).

    Raises :class:`ProcError` when it cannot start, or when it runs past ``timeout``
    seconds (its process group is killed first); what ``watch`` raises ends the command
    the same way and is raised as it is.
    """
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise ProcError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    assert proc.stdout is not None
    with _LIVE_LOCK:
        _LIVE.add(proc.pid)
    kept = bytearray()
    pending = b""
    deadline = started + timeout
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            drained: float | None = None
            while True:
                now = time.monotonic()
                left = deadline - now
                if left <= 0:
                    raise ProcError(f"{argv[0]} did not finish within {timeout:g} s; it was killed")
                if drained is None and proc.poll() is not None:
                    # The command is done; what it left running may hold the pipe open
                    # forever. Its output gets a moment, then the group goes.
                    drained = now + _DRAIN
                if drained is not None and now >= drained:
                    break
                if watch is not None:
                    watch()
                if not selector.select(timeout=min(left, 0.2 if drained else 1.0)):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                kept += chunk
                del kept[:-tail]
                if on_line is not None:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        on_line(line.decode("utf-8", "replace").rstrip("\r"))
                    if len(pending) > tail:  # a "line" with no end: pass it on in pieces
                        on_line(pending[:tail].decode("utf-8", "replace"))
                        pending = b""
        if on_line is not None and pending:
            on_line(pending.decode("utf-8", "replace"))
        returncode = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired as exc:
        raise ProcError(f"{argv[0]} did not finish within {timeout:g} s; it was killed") from exc
    finally:
        # Whatever happened (deadline, an exception from on_line, the caller's thread
        # being cancelled), nothing of this command's group outlives the call. The pid is
        # the command's until it is reaped (returncode set), so before_kill cannot hit a
        # process that reused it.
        if before_kill is not None and proc.returncode is None:
            with contextlib.suppress(OSError):
                before_kill(proc.pid)
        _kill_group(proc)
        proc.stdout.close()
        with _LIVE_LOCK:
            _LIVE.discard(proc.pid)
    return Finished(
        argv=tuple(argv),
        returncode=returncode,
        output=kept.decode("utf-8", "replace"),
        seconds=time.monotonic() - started,
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_KILL_WAIT)
