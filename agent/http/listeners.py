"""Binding the listeners: TCP for probes (and optionally the API), a unix socket for the API.

Policy:
- the unix socket is created with mode 0660 from the start (no window where it is
  world-writable) and, if ``server.socket_group`` is set, owned by that group, so the
  runner container's user can reach it;
- a leftover socket file from a killed agent is removed; a socket that still answers
  belongs to another live agent and is never stolen; a path that is not a socket is
  never deleted;
- every failure is a :class:`BindError` that says what to change;
- every listener is a :class:`GuardedSite`: its own connection cap, idle and header
  timeouts (see :mod:`agent.http.connections`), whichever runner it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from agent.config import models, userpaths
from agent.http import connections

SOCKET_MODE = 0o660
BACKLOG = 1024
"""Connections the kernel queues before the agent accepts them: a burst (a flood, or
every hook of a busy node at once) waits in the queue instead of a SYN retry's second."""


class BindError(Exception):
    """A listener could not be bound; the message says what to change."""


Opener = Callable[[Callable[[], asyncio.Protocol]], Awaitable[asyncio.AbstractServer]]


class GuardedSite(web.BaseSite):
    """A listener whose connections one :class:`connections.Guard` holds."""

    __slots__ = ("_name", "_open", "guard")

    def __init__(
        self, runner: web.BaseRunner, name: str, opener: Opener, limits: connections.Limits
    ) -> None:
        super().__init__(runner)
        self._open = opener
        self._name = name
        self.guard = connections.Guard(name, limits)

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # the runner is set up before its sites start
        self._server = await self._open(connections.handler_factory(server, self.guard))

    @property
    def sockets(self) -> list[socket.socket]:
        """The bound sockets, once started."""
        # asyncio's and uvloop's servers both have them; the abstract type does not.
        return list(getattr(self._server, "sockets", None) or ())


async def start_tcp(
    runner: web.AppRunner, address: str, limits: connections.Limits | None = None
) -> tuple[GuardedSite, int]:
    """Bind ``address`` (host:port) and return the site and the bound port (for port 0)."""
    host, port = models.split_address(address)
    loop = asyncio.get_running_loop()

    def opener(factory: Callable[[], asyncio.Protocol]) -> Awaitable[asyncio.AbstractServer]:
        return loop.create_server(factory, host, port, reuse_address=True, backlog=BACKLOG)

    site = GuardedSite(runner, f"tcp:{address}", opener, limits or connections.Limits())
    try:
        await site.start()
    except OSError as exc:
        await site.stop()
        raise BindError(
            f"cannot listen on {address}: {exc.strerror or exc}; "
            "pick a free address or stop whatever holds it"
        ) from exc
    # Port 0 asks the kernel for a free port; the socket knows which one it got.
    bound = next((int(s.getsockname()[1]) for s in site.sockets), port)
    return site, bound


def _clear_stale(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(f"{path} exists and is not a socket; remove it or pick another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)  # nobody listens: left over from a killed agent
    except OSError as exc:
        # A live agent too busy to accept (a full backlog: a timeout) must keep its
        # socket: an engine following it reads a removed socket as "that agent stopped".
        raise BindError(
            f"cannot tell whether another agent serves the API on {path} ({exc}); stop it, "
            "or remove the socket if none does"
        ) from exc
    else:
        raise BindError(f"another process is already serving the API on {path}; stop it first")
    finally:
        probe.close()


def bind_unix(path: Path, *, group: int | str | None) -> socket.socket:
    """Create, bind and listen on the API unix socket with mode 0660."""
    try:
        if userpaths.is_per_user(path, os.environ):
            # The per-user default: a folder only this user may enter (never a
            # predictable path another user could take first).
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BindError(
            f"cannot create {path.parent} for the API socket: {exc.strerror}; "
            "set server.socket_path (or RUNNER_AGENT_SOCKET) to a writable place"
        ) from exc
    _clear_stale(path)
    # Bound and listening under a temporary name, then renamed into place: a client never
    # finds the path before it accepts connections, nor with the wrong mode or group.
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o117)  # the socket is born 0660
    try:
        sock.bind(str(staging))
    except OSError as exc:
        sock.close()
        hint = "it is too long for a unix socket path" if exc.errno == errno.EINVAL else ""
        raise BindError(
            f"cannot bind the API socket {path}: {exc.strerror or exc} {hint}".rstrip()
        ) from exc
    finally:
        os.umask(old_umask)
    try:
        os.chmod(staging, SOCKET_MODE)
        if group is not None:
            gid = group if isinstance(group, int) else grp.getgrnam(group).gr_gid
            os.chown(staging, -1, gid)
        sock.listen(BACKLOG)
        os.replace(staging, path)
    except (OSError, KeyError) as exc:
        sock.close()
        with contextlib.suppress(OSError):
            staging.unlink()
        raise BindError(
            f"cannot set up the API socket {path} (group {group!r}): {exc}; "
            "check server.socket_path and server.socket_group"
        ) from exc
    sock.setblocking(False)
    return sock


async def start_unix(
    runner: web.AppRunner,
    path: Path,
    *,
    group: int | str | None,
    limits: connections.Limits | None = None,
) -> GuardedSite:
    """Serve ``runner`` on the unix socket at ``path``."""
    # Off the loop: probing a stale socket may wait up to a second, and a group name
    # lookup may ask NSS (LDAP, sssd).
    sock = await asyncio.to_thread(bind_unix, path, group=group)
    loop = asyncio.get_running_loop()

    def opener(factory: Callable[[], asyncio.Protocol]) -> Awaitable[asyncio.AbstractServer]:
        return loop.create_server(factory, sock=sock, backlog=BACKLOG)

    site = GuardedSite(runner, f"unix:{path}", opener, limits or connections.Limits())
    try:
        await site.start()
    except BaseException:
        sock.close()
        await site.stop()
        raise
    return site
