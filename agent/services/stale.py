"""Pre-start cleanup of a killed previous run's pid files and sockets.

Policy: a file is removed ONLY when the process it stands for is gone.
- A pid file is stale when the pid it holds does not exist, is a zombie (dead, waiting
  for a reaper: dockerd takes a zombie containerd for a live one and waits ~30 s on it),
  is not a number, or names a live process whose program is not one of
  ``process_names`` (the pid was reused). Anything else is a live daemon: its file is
  left alone and a warning says so.
- A socket is stale when connecting to it is refused (nothing listens). A socket that
  accepts, even one whose daemon is hung, is left alone; so is a path that is not a
  socket.
Blocking (small reads, one connect): the supervisor runs it in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from pathlib import Path

from agent.config import services as specs

logger = logging.getLogger(__name__)


def _process(pid: int) -> tuple[str, str] | None:
    """(state, comm) of ``pid``, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return ("?", "?")  # exists but unreadable: treat as alive
    comm = raw[raw.find(b"(") + 1 : raw.rfind(b")")].decode("utf-8", "replace")
    state = raw[raw.rfind(b")") + 1 :].split()[0].decode()
    return state, comm


def _pid_file_stale(path: Path, names: list[str]) -> tuple[bool, str]:
    # Not followed, and bounded: a pid file lives in a /run that a runner container may
    # share (ARC's layout), where a link could name any file.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, "absent"
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # removed (the link, never its target)
            return True, "is a link, which the service would write through"
        if exc.errno == errno.ENXIO:  # a socket
            return False, "is not a regular file (remove it)"
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False, "is not a regular file (remove it)"
        text = os.read(fd, 64).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        return True, f"holds {text[:20]!r}, not a pid"
    pid = int(text)
    found = _process(pid)
    if found is None:
        return True, f"names pid {pid}, which is gone"
    state, comm = found
    if state == "Z":
        return True, f"names pid {pid}, a zombie ({comm})"
    if names and comm not in names:
        return True, f"names pid {pid}, now {comm!r} (the pid was reused)"
    return False, f"names live pid {pid} ({comm})"


def _socket_stale(path: Path) -> tuple[bool, str]:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False, "absent"
    if not stat.S_ISSOCK(mode):
        return False, "is not a socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except ConnectionRefusedError:
            return True, "refuses connections"
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False, "absent"
            return False, f"cannot be checked: {exc.strerror or exc}"
    return False, "accepts connections"


def clean(service: str, pre: specs.PreStart) -> list[str]:
    """Remove what is stale; return a line per file removed (also logged)."""
    removed = []
    checks = [(p, _pid_file_stale(p, pre.process_names)) for p in pre.pid_files]
    checks += [(p, _socket_stale(p)) for p in pre.sockets]
    for path, (stale, why) in checks:
        if stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(f"{path} ({why})")
            logger.info(
                "service %s: removed stale %s: %s",
                service,
                path,
                why,
                extra={"service": service, "path": str(path)},
            )
        elif why not in ("absent",):
            logger.warning(
                "service %s: left %s in place: it %s",
                service,
                path,
                why,
                extra={"service": service, "path": str(path)},
            )
    return removed
