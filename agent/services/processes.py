"""Child processes of the supervisor: spawn, watch, signal, reap.

Policy:
- argv lists only; stdin is /dev/null; each child gets its own session, so its whole
  process group can be signalled at once and a terminal's signals never reach it;
- ``Popen`` runs in a worker thread (fork and exec must not stall the event loop); the
  exit is then watched on the loop through a pidfd, and the child is reaped by its own
  ``Popen`` object, by PID. The supervisor never calls ``waitpid(-1)``: that would steal
  the exit status of processes other parts of the agent run (installs);
- when the main process is gone and ``kill_group`` is set, whatever is left of its group
  is SIGKILLed BEFORE the leader is reaped: the unreaped leader keeps its PID (and so the
  group id) reserved, so the signal cannot reach an unrelated process that reused it;
- a stop sends the stop signal, then SIGCONT (a stopped process cannot act on SIGTERM),
  then SIGKILL after the grace;
- orphans that leave the group (a ``setsid`` grandchild such as dockerd's containerd)
  are reparented to PID 1. In the images PID 1 is tini (``docker --init``), which reaps
  them; the agent must not run as PID 1 itself (it warns if it does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_CHUNK = 65536


class SpawnError(Exception):
    """The service's command could not be started (missing program, bad cwd, no such user)."""


LineSink = Callable[[str, bytes], None]
"""Receives (stream, raw line without its newline) for each line of output."""


def describe_exit(returncode: int | None) -> str:
    """``exited 3`` or ``killed by SIGKILL``, for logs and the API."""
    if returncode is None:
        return "did not start"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited {returncode}"


def _popen(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None,
    user: int | str | None,
) -> tuple[subprocess.Popen[bytes], int | None]:
    extra: dict[str, object] = {}
    env = dict(env)
    if user is not None:
        try:
            entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
        except KeyError:
            raise SpawnError(f"no such user {user!r}; expected a user name or uid") from None
        extra = {
            "user": entry.pw_uid,
            "group": entry.pw_gid,
            "extra_groups": os.getgrouplist(entry.pw_name, entry.pw_gid),
        }
        env.setdefault("HOME", entry.pw_dir)
        env.setdefault("USER", entry.pw_name)
        env.setdefault("LOGNAME", entry.pw_name)
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
            **extra,  # type: ignore[call-overload]
        )
    except PermissionError as exc:
        raise SpawnError(
            f"cannot run {argv[0]}: {exc.strerror} (running as another user needs root)"
        ) from exc
    except FileNotFoundError as exc:
        what = f"working folder {cwd}" if cwd is not None and not cwd.is_dir() else argv[0]
        raise SpawnError(f"cannot run {argv[0]}: {what} not found; check PATH or cwd") from exc
    except OSError as exc:
        raise SpawnError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    try:
        pidfd: int | None = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # kernels before 5.3: polled instead
        pidfd = None
    return proc, pidfd


class Child:
    """One running (or finished) child process and its output pipes."""

    def __init__(
        self, proc: subprocess.Popen[bytes], pidfd: int | None, *, on_line: LineSink, group: bool
    ) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.group = group
        self._on_line = on_line
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = self._loop.create_future()
        self._pending: dict[int, bytearray] = {}
        self._names: dict[int, str] = {}
        self._poller: asyncio.TimerHandle | None = None
        for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            assert stream is not None
            fd = stream.fileno()
            os.set_blocking(fd, False)
            self._pending[fd] = bytearray()
            self._names[fd] = name
            self._loop.add_reader(fd, self._read, fd)
        self._pidfd = pidfd
        if pidfd is not None:
            self._loop.add_reader(pidfd, self._on_exit)
        else:
            self._poller = self._loop.call_later(0.1, self._poll)

    @property
    def running(self) -> bool:
        """Whether the main process has not been reaped yet."""
        return not self.exited.done()

    # --- output ------------------------------------------------------------------------

    def _read(self, fd: int) -> None:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_pipe(fd)
            return
        buf = self._pending[fd]
        buf += chunk
        *lines, rest = bytes(buf).split(b"\n")
        self._pending[fd] = bytearray(rest)
        name = self._names[fd]
        for line in lines:
            self._on_line(name, line)
        if len(rest) > _CHUNK:  # a line with no end in sight: pass what there is
            self._on_line(name, bytes(rest))
            self._pending[fd] = bytearray()

    def _close_pipe(self, fd: int) -> None:
        if fd not in self._pending:
            return
        self._loop.remove_reader(fd)
        rest = self._pending.pop(fd)
        if rest:
            self._on_line(self._names[fd], bytes(rest))
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None and not stream.closed and stream.fileno() == fd:
                stream.close()

    def _drain_pipes(self) -> None:
        # The main process is gone: take what it wrote, then stop listening. A
        # grandchild still holding a pipe (kill_group off) must not keep it open here.
        for fd in list(self._pending):
            for _ in range(64):
                try:
                    chunk = os.read(fd, _CHUNK)
                except OSError:
                    break
                if not chunk:
                    break
                self._pending[fd] += chunk
                *lines, rest = bytes(self._pending[fd]).split(b"\n")
                self._pending[fd] = bytearray(rest)
                for line in lines:
                    self._on_line(self._names[fd], line)
            self._close_pipe(fd)

    # --- exit --------------------------------------------------------------------------

    def _poll(self) -> None:
        if self._proc.poll() is None and not self._zombie():
            self._poller = self._loop.call_later(0.1, self._poll)
            return
        self._on_exit()

    def _zombie(self) -> bool:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_bytes()
        except OSError:
            return False
        return stat.rsplit(b")", 1)[-1].split()[0] == b"Z"

    def _on_exit(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self.group:
            # Before reaping: the zombie leader keeps the group id from being reused.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        # The leader has exited (pidfd readable), so this wait does not block.
        returncode = self._proc.wait()
        self._drain_pipes()
        if not self.exited.done():
            self.exited.set_result(returncode)

    # --- signals -----------------------------------------------------------------------

    def send(self, sig: signal.Signals) -> None:
        """Signal the process (its group with ``group``); nothing once it is reaped."""
        if not self.running:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)

    async def stop(self, sig: signal.Signals, *, grace: float) -> int:
        """Stop it: ``sig`` (and SIGCONT), SIGKILL after ``grace`` seconds; the exit code."""
        if self.running:
            self.send(sig)
            if sig not in (signal.SIGKILL, signal.SIGCONT):
                self.send(signal.SIGCONT)
            try:
                return await asyncio.wait_for(asyncio.shield(self.exited), timeout=grace)
            except TimeoutError:
                logger.warning(
                    "pid %d did not stop within %.1f s of %s; sending SIGKILL",
                    self.pid,
                    grace,
                    sig.name,
                )
                self.send(signal.SIGKILL)
        return await self.exited

    def kill_now(self) -> None:
        """SIGKILL at once, without waiting (the agent is exiting this instant)."""
        self.send(signal.SIGKILL)

    def kill_and_reap(self) -> None:
        """SIGKILL, reap and stop watching, without the loop (its task is being cancelled).

        Blocks for the few milliseconds a SIGKILLed process takes to die.
        """
        self.send(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = self._proc.wait(timeout=2.0)
            if not self.exited.done():
                self.exited.set_result(code)
        self.close()

    def close(self) -> None:
        """Stop watching (the loop is closing); the process is not signalled."""
        for fd in list(self._pending):
            self._close_pipe(fd)
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._poller is not None:
            self._poller.cancel()


async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None,
    user: int | str | None,
    on_line: LineSink,
    group: bool,
) -> Child:
    """Start ``argv`` in a new session; raise :class:`SpawnError` if it cannot start."""
    started = asyncio.ensure_future(asyncio.to_thread(_popen, argv, env, cwd, user))
    try:
        proc, pidfd = await asyncio.shield(started)
    except asyncio.CancelledError:
        # Cancelled (the agent is stopping) while the thread forks: whatever it started
        # must not live on unsupervised.
        started.add_done_callback(_kill_unwatched)
        raise
    return Child(proc, pidfd, on_line=on_line, group=group)


def _kill_unwatched(
    done: asyncio.Future[tuple[subprocess.Popen[bytes], int | None]],
) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    proc, pidfd = done.result()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1.0)  # SIGKILLed: gone within milliseconds
    if pidfd is not None:
        os.close(pidfd)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
