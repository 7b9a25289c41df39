"""Connections on each listener: timeouts, a cap, a reserve of file descriptors, and
malformed requests answered without echoing them.

Policy:
- a connection with no request is closed after ``server.idle_timeout_seconds``
  (aiohttp's keep-alive timer, which also runs from connect to the first request);
- once a request's first byte arrives, its headers must be complete within
  ``server.header_timeout_seconds``, else the connection is closed: a client that
  trickles headers (slowloris) holds nothing for long;
- each listener holds at most its cap of connections. A new one past the cap is still
  accepted, and the connection idle longest is closed to make room (one with a request
  in progress never is), so a flood of idle sockets never blocks ``/healthz``; only
  when every held connection is busy is the new one closed;
- the caps are sized so that ``server.fd_reserve`` descriptors stay free for the
  agent's own work whatever clients do. At startup the soft ``RLIMIT_NOFILE`` is raised
  toward the hard limit, to at most :data:`SOFT_LIMIT_CEILING` (children inherit it,
  and tools such as apt close every possible descriptor one by one);
- a request aiohttp cannot parse is answered in the agent's JSON error shape and logged
  at debug level by its kind only: the parser's own message quotes the raw bytes,
  ``Authorization`` header included.

This module reaches into aiohttp at one private point, ``RequestHandler._handle_request``
(wrapped to know when a connection is busy); the listener tests exercise it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_request import BaseRequest

from agent.config import models
from agent.http import errors

logger = logging.getLogger(__name__)

SOFT_LIMIT_CEILING = 65536
"""The soft open-files limit is raised to the hard limit, but never past this."""
LISTENERS = 4
"""Listeners the descriptors are shared among: probe, API socket, API TCP, webhooks."""
MIN_CONNECTIONS = 16
"""A listener's cap never goes below this, however low the open-files limit."""
MAX_LINE = 8190
"""aiohttp's limit on the request line and on each header, in bytes."""
_CAP_WARNING_EVERY = 60.0
_QUOTES = re.compile(r"""b'|["\\]|'.*'|:\s""")
"""What a parser message that quotes the request shows."""

if not hasattr(web.RequestHandler, "_handle_request"):  # pragma: no cover - aiohttp upgrade
    # Without it no connection would ever look busy: the header timeout would cut long
    # responses and the cap could close a connection mid-request. Refuse to run instead.
    raise ImportError(
        "this aiohttp has no RequestHandler._handle_request, which agent.http.connections "
        "wraps; pin aiohttp to a version it supports (see pyproject.toml)"
    )


@dataclass(frozen=True)
class Limits:
    """What each listener enforces on its connections."""

    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    max_connections: int = 1024


def raise_open_files() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` toward the hard limit; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    target = SOFT_LIMIT_CEILING if hard == infinite else min(hard, SOFT_LIMIT_CEILING)
    if soft != infinite and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # a sandbox may refuse; the caps adapt
            logger.debug("could not raise the open-files limit to %d: %s", target, exc)
    return SOFT_LIMIT_CEILING if soft == infinite else int(soft)


def limits(server: models.ServerSettings) -> Limits:
    """The listeners' limits from ``server``, with caps that leave ``server.fd_reserve``
    descriptors free (raising the soft open-files limit first)."""
    soft = raise_open_files()
    room = max(MIN_CONNECTIONS, (soft - server.fd_reserve) // LISTENERS)
    cap = min(server.max_connections, room)
    if cap < server.max_connections:
        logger.warning(
            "the open-files limit (%d) leaves room for %d connections per listener after "
            "server.fd_reserve (%d), below server.max_connections (%d); raise the limit "
            "(ulimit -n, or the container runtime's nofile) to allow more",
            soft,
            cap,
            server.fd_reserve,
            server.max_connections,
        )
    return Limits(
        idle_timeout=server.idle_timeout_seconds,
        header_timeout=server.header_timeout_seconds,
        max_connections=cap,
    )


class Guard:
    """One listener's connections, least recently active first."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        self._held: OrderedDict[GuardedHandler, None] = OrderedDict()
        self._warned_at = -_CAP_WARNING_EVERY

    def admit(self, conn: GuardedHandler) -> bool:
        """Hold ``conn``, closing the connection idle longest if at the cap; False if
        every held connection is busy (``conn`` must then be closed)."""
        if len(self._held) >= self.limits.max_connections and not self._evict():
            return False
        self._held[conn] = None
        return True

    def touch(self, conn: GuardedHandler) -> None:
        """``conn`` was active: it goes to the back of the eviction queue."""
        if conn in self._held:
            self._held.move_to_end(conn)

    def forget(self, conn: GuardedHandler) -> None:
        """``conn`` is gone."""
        self._held.pop(conn, None)

    def _evict(self) -> bool:
        victim = next((c for c in self._held if not c.busy), None)
        now = asyncio.get_running_loop().time()
        if now - self._warned_at >= _CAP_WARNING_EVERY:
            self._warned_at = now
            logger.warning(
                "listener %s is at its cap of %d connections: closing the ones idle longest "
                "(server.max_connections)",
                self.name,
                self.limits.max_connections,
                extra={"listener": self.name},
            )
        if victim is None:
            return False
        del self._held[victim]
        victim.force_close()
        return True


class GuardedHandler(web.RequestHandler):
    """aiohttp's request handler, held by a :class:`Guard`, with a header-read timeout
    and malformed requests answered as JSON."""

    __slots__ = ("_guard", "_head_timer", "_started", "busy")

    def __init__(self, manager: web.Server, guard: Guard, **kwargs: Any) -> None:
        super().__init__(
            manager,
            keepalive_timeout=guard.limits.idle_timeout,
            access_log=None,  # type: ignore[arg-type]  # documented: no access log
            max_line_size=MAX_LINE,
            max_field_size=MAX_LINE,
            **kwargs,
        )
        self._guard = guard
        self.busy = False
        """A request is being handled (headers in, response not yet sent)."""
        self._head_timer: asyncio.TimerHandle | None = None
        self._started = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._guard.admit(self):
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.forget(self)
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._guard.touch(self)
        if not self.busy and self._head_timer is None and self.transport is not None:
            # The start of a request (or all of it: the timer is cancelled when its
            # handling starts, a moment from now).
            self._head_timer = asyncio.get_running_loop().call_later(
                self._guard.limits.header_timeout, self._head_expired, self._started
            )

    def _head_expired(self, started: int) -> None:
        self._head_timer = None
        if not self.busy and self._started == started and self.transport is not None:
            logger.debug(
                "closing a connection on %s: its request's headers took over %.1f s "
                "(server.header_timeout_seconds)",
                self._guard.name,
                self._guard.limits.header_timeout,
            )
            self.force_close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    async def _handle_request(
        self,
        request: BaseRequest,
        start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        self.busy = True
        self._started += 1
        self._cancel_head_timer()
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self.busy = False
            self._guard.touch(self)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer a request aiohttp could not parse (or a crash past the middleware) in
        the JSON error shape, without quoting the request."""
        if status >= 500 and exc is not None:
            logger.error("unhandled error serving a request on %s", self._guard.name, exc_info=exc)
            text = "internal error; the agent's log has the details"
        elif status >= 500:
            text = _phrase(status)
        else:
            text = f"malformed HTTP request: {describe(exc)}"
            logger.debug(
                "refused a malformed request on %s: %s (%s)",
                self._guard.name,
                text,
                type(exc).__name__,
            )
        if request.writer.output_size > 0:  # as aiohttp: a response already started
            raise ConnectionError("the response had started; cannot send the error")
        code = "internal_error" if status >= 500 else "malformed_request"
        response = errors.error_response(status, code, text)
        response.force_close()
        return response


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def describe(exc: BaseException | None) -> str:
    """What is wrong with a request, never quoting its bytes."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return f"the request line or a header is over {MAX_LINE} bytes"
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return "not an HTTP method (TLS, or another protocol, to a plain-HTTP port?)"
    if isinstance(exc, http_exceptions.BadStatusLine):
        return "a bad request line (lines end with CRLF: HTTP/1.1 METHOD PATH VERSION)"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return "an invalid header"
    if isinstance(exc, http_exceptions.HttpProcessingError):
        # The C parser's message is a description, then the offending bytes after a
        # blank line; only a first line that quotes nothing is kept.
        first = exc.message.split("\n", 1)[0].strip().rstrip(":")
        if first and len(first) <= 80 and not _QUOTES.search(first):
            return first
    return "unparseable framing"


def handler_factory(server: web.Server, guard: Guard) -> Callable[[], GuardedHandler]:
    """The protocol factory of one listener: aiohttp's handler, held by ``guard``."""
    loop = asyncio.get_running_loop()

    def make() -> GuardedHandler:
        return GuardedHandler(server, guard, loop=loop)

    return make
