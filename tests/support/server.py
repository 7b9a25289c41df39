"""A real HTTP server for download tests: scripted replies per path, requests counted.

Each route maps a path to a list of :class:`Reply`; the list is consumed in order and its
last reply repeats, so ``[fail(500), ok(body)]`` fails once and then serves. A reply can
cut its body short, stall in the middle of it, ask the client to slow down or redirect.

The server listens on 127.0.0.1 on a free port in a background thread. Stopping it wakes
every stalled reply, shuts the loop down, closes the socket and joins every thread, so a
test leaves no threads or sockets behind.
"""

from __future__ import annotations

import collections
import http.server
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted response."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    send: int | None = None  # bytes of the body actually sent, then the connection closes
    stall: float = 0.0  # seconds to wait, silent, after sending ``send`` bytes
    content_length: bool = True  # False: no Content-Length, the body ends at close
    delay: float = 0.0  # seconds to wait before answering at all
    rate: float = 0.0  # bytes per second for the body (0: as fast as possible)


def ok(body: bytes, *, content_length: bool = True) -> Reply:
    return Reply(body=body, content_length=content_length)


def fail(status: int, body: bytes = b"") -> Reply:
    return Reply(status=status, body=body)


def truncated(body: bytes) -> Reply:
    """Announces ``len(body)`` bytes, sends half, then closes."""
    return Reply(body=body, send=len(body) // 2)


def stalled(body: bytes, seconds: float = 30.0) -> Reply:
    """Sends half the body, then goes silent for ``seconds`` (cut short when the server stops)."""
    return Reply(body=body, send=len(body) // 2, stall=seconds)


def slow_down(retry_after: str | None = None) -> Reply:
    headers = (("Retry-After", retry_after),) if retry_after is not None else ()
    return Reply(status=429, headers=headers)


def redirect(location: str, status: int = 302) -> Reply:
    return Reply(status=status, headers=(("Location", location),))


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_GET(self) -> None:
        owner = self.server.owner
        if owner.only_from is not None and self.client_address[0] != owner.only_from:
            # Stands for a network that only the proxy can reach.
            with owner._lock:
                owner.refused += 1
            self.send_error(403, "direct connections are refused; use the proxy")
            return
        reply = owner._take(urllib.parse.urlsplit(self.path).path, dict(self.headers))
        with owner._lock:
            owner._in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner._in_flight)
        try:
            if reply.delay:
                owner._stopping.wait(reply.delay)
            self._answer(reply)
        finally:
            with owner._lock:
                owner._in_flight -= 1

    def _answer(self, reply: Reply) -> None:
        owner = self.server.owner
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.content_length:
            self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        body = reply.body if reply.send is None else reply.body[: reply.send]
        if reply.rate:
            step = 64 * 1024
            for at in range(0, len(body), step):
                self.wfile.write(body[at : at + step])
                if owner._stopping.wait(step / reply.rate):
                    break
        else:
            self.wfile.write(body)
        self.wfile.flush()
        if reply.stall:
            owner._stopping.wait(reply.stall)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests read counts, not an access log on stderr


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins every handler thread
    owner: Server

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-reply (a timeout under test) is expected here


class Server:
    """Serves scripted routes; use as a context manager (or through ``http_server``)."""

    def __init__(
        self,
        routes: dict[str, list[Reply]] | None = None,
        *,
        only_from: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.only_from = only_from
        self.refused = 0
        self.max_in_flight = 0
        self._in_flight = 0
        self._tls = tls
        self._routes: dict[str, list[Reply]] = {p: list(r) for p, r in (routes or {}).items()}
        self._counts: collections.Counter[str] = collections.Counter()
        self._headers: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
        self._lock = threading.Lock()
        self._required: list[tuple[str, str, str]] = []
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, path: str, *replies: Reply) -> str:
        """Script ``path`` (replacing what it had); return its full URL."""
        with self._lock:
            self._routes[path] = list(replies)
        return self.url(path)

    def url(self, path: str = "/") -> str:
        assert self._httpd is not None, "the server is not running"
        host, port = self._httpd.server_address[:2]
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host!s}:{port}{path}"

    def count(self, path: str) -> int:
        with self._lock:
            return self._counts[path]

    def require(self, prefix: str, name: str, value: str) -> None:
        """Answer 401 on paths under ``prefix`` unless header ``name`` is ``value`` (a
        mirror that demands credentials); a later call for the prefix replaces it."""
        with self._lock:
            self._required = [r for r in self._required if r[0] != prefix]
            self._required.append((prefix, name, value))

    def headers(self, path: str) -> list[dict[str, str]]:
        """The request headers seen on ``path``, one dict per request."""
        with self._lock:
            return list(self._headers[path])

    def _take(self, path: str, headers: dict[str, str]) -> Reply:
        with self._lock:
            self._counts[path] += 1
            self._headers[path].append(headers)
            for prefix, name, value in self._required:
                sent = {k.lower(): v for k, v in headers.items()}.get(name.lower())
                if path.startswith(prefix) and sent != value:
                    return Reply(status=401, headers=(("WWW-Authenticate", 'Basic realm="m"'),))
            replies = self._routes.get(path)
            if not replies:
                return fail(404, b"no such route")
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def start(self) -> None:
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        if self._tls is not None:
            self._httpd.socket = self._tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-http"
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
