"""The sandbox's process chain, built so that nothing started in it outlives its run.

The chain, as root: ``setpriv --pdeathsig KILL`` -> ``unshare`` (private mount, IPC and
PID namespaces, and a network namespace for ``network: none``; ``--kill-child``) ->
``sh`` (the mounts of :mod:`agent.install.sandbox`) -> the namespace's **init**, this
module's small program on the agent's own interpreter -> ``setpriv`` to the sandbox uid
(no capabilities, no supplementary groups, ``no_new_privs``) -> the command.

Policy:
- The init stays root and keeps its process group for its whole life. ``--kill-child``
  gave it a parent-death signal, and a user switch would clear that signal (the old
  chain exec'd ``setpriv`` from the init, so a script that left its group with
  ``setsid`` outlived the timeout and the agent). The init runs the command as its
  child, reaps every orphan the namespace hands it, and exits with the command's
  status; when the init exits, the kernel kills every process left in the namespace,
  whatever it did: ``setsid``, a double fork, a new process group, SIGTERM ignored.
- ``unshare`` gets a parent-death signal of its own: when the agent's process dies, even
  by SIGKILL, unshare dies, then the init, then the namespace. The signal follows the
  thread that started the chain; that thread is blocked in :func:`agent.kits.procs.run`
  until the chain is reaped, so it fires only when the process dies.
- On a timeout, a limit, or any other early end, :func:`kill_init` kills the init by its
  host pid, through a pidfd (a pid cannot be reused under it), and waits until it is
  gone: by then the namespace is empty, so nothing of the script still runs when the
  agent takes its files back.
- The command's RLIMIT_NPROC is set in the init's child, before the user switch. It
  counts the processes of the sandbox's uid; a uid of its own per sandbox
  (:mod:`agent.install.confine_uids`) makes it count only this sandbox's.
- With ``network: none`` the init brings loopback up in the empty network namespace
  (one ioctl, no iproute2 needed): the command reaches nothing but itself.

No cgroup is needed for any of this: a container may not be able to create one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import sys
from pathlib import Path

from agent.kits import environ

logger = logging.getLogger(__name__)

INIT = r"""
import ctypes, fcntl, json, os, resource, socket, struct, sys
import warnings  # os.execvpe imports it; after the switch the stdlib may be unreadable
uid, gid, nproc, net = sys.argv[1:5]
argv = sys.argv[6:]
uid, gid = int(uid), int(gid)
with os.fdopen(3, "rb") as handle:  # the snippet opened the root-only file as fd 3
    env = json.loads(handle.read())
if net == "none":
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, 0x8913, req))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sh14x", b"lo", flags | 1))
child = os.fork()
if child == 0:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        resource.setrlimit(resource.RLIMIT_NPROC, (int(nproc), int(nproc)))
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            last = int(handle.read())
        for cap in range(last + 1):  # PR_CAPBSET_DROP: no exec can bring one back
            if libc.prctl(24, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "cannot drop capability %d" % cap)
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # from root to a non-zero uid: every capability goes
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "cannot set no_new_privs")
        if os.getuid() == 0 or os.geteuid() == 0:
            raise OSError("still root after the switch")
        # Only now, as the sandbox's user, the command's own environment and PATH.
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:
        os.write(2, ("sandbox: cannot start %s: %s\n" % (argv[0], exc)).encode())
    os._exit(127)
while True:
    pid, status = os.wait()
    if pid == child:
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
"""
"""The namespace's init (see the module's policy); argv: uid gid nproc net -- command,
and the command's environment as JSON on descriptor 3. Everything before its child's
user switch runs as root with a fixed minimal environment (:data:`CHAIN_ENV`): the
command's own (its PATH starts inside the staging folder, its variables may name
libraries there, ``LD_LIBRARY_PATH={prefix}/lib``) is read from a root-only file and
given to the command alone, by ``execve`` after the switch (never on a command line,
which every user can read)."""

CHAIN_ENV = {"PATH": environ.DEFAULT_PATH, "LANG": environ.FIXED_LOCALE}
"""The whole environment of the root part of the chain."""

_GONE_WAIT = 60.0
"""Seconds to wait for a killed namespace to empty: a process stuck in the kernel (a dead
NFS server) dies only when its call returns, and its files must not be taken back, nor
its uid handed out, while it can still write."""


def command(
    snippet: str,
    snippet_args: list[str],
    argv: list[str],
    *,
    uid: int,
    gid: int,
    max_processes: int,
    network: str,
) -> list[str]:
    """The whole chain's argv, to run with :data:`CHAIN_ENV`. ``snippet`` (a shell script
    run as the init before it becomes the init, with ``snippet_args`` and then the init's
    own argv as its arguments) must open the file :func:`write_env` wrote as descriptor 3
    and end by ``exec "$@"``."""
    net = ["--net"] if network == "none" else []
    setpriv, unshare, sh = (host_tool(t) for t in ("setpriv", "unshare", "sh"))
    init = [
        # The real interpreter, not a venv's link to it: the venv may sit under /tmp,
        # which the snippet covers before it runs the init (stdlib only: -I -S).
        os.path.realpath(sys.executable), "-I", "-S", "-c", INIT,
        str(uid), str(gid), str(max_processes),
    ]  # fmt: skip
    return [
        setpriv, "--pdeathsig", "KILL", "--",
        unshare, "--mount", "--propagation", "private", "--ipc", "--pid", *net,
        "--kill-child", "--mount-proc", "--",
        sh, "-c", snippet, "sandbox", *snippet_args,
        *init, network, "--", *argv,
    ]  # fmt: skip


def write_env(path: Path, env: dict[str, str]) -> None:
    """Write the command's environment where only root can read it (created ``O_EXCL``,
    mode 0600, never through a link)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(env, out)


def host_tool(name: str) -> str:
    """``name``'s absolute path on the host's own PATH (never the command's: it starts in
    the staging folder, and every process before the user switch is root)."""
    found = shutil.which(name, path=CHAIN_ENV["PATH"])
    if found is None:
        raise FileNotFoundError(f"the script sandbox needs {name} (util-linux); install it")
    return found


def kill_init(unshare_pid: int) -> None:
    """SIGKILL the namespace's init (the child of ``unshare_pid``, still running), and wait
    until it, and so every process of its namespace, is gone."""
    for pid in _children(unshare_pid):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # already gone
        try:
            if _parent(pid) != unshare_pid:
                continue  # it ended and its pid went to another process before the open
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            # A pidfd reads as ready once the process has exited; an init exits only
            # after the kernel has reaped everything else in its namespace.
            ready, _, _ = select.select([fd], [], [], _GONE_WAIT)
            if not ready:
                logger.warning(
                    "the sandbox's namespace (init pid %d) did not empty within %.0f s of "
                    "SIGKILL: a process is stuck in the kernel (a hung NFS mount?)",
                    pid,
                    _GONE_WAIT,
                )
        except OSError:
            pass
        finally:
            os.close(fd)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: look at every process
        found = []
        for name in os.listdir("/proc"):
            if name.isdigit() and _parent(int(name)) == pid:
                found.append(int(name))
        return found


def _parent(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rpartition(")")[2].split()[1])
    return None
