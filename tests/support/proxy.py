"""A real forward proxy on loopback for the network-settings tests.

It serves plain ``GET http://...`` requests and ``CONNECT host:port`` tunnels, and counts
both. Connections to loopback leave from :data:`SOURCE` (127.0.0.3), so a test server
that accepts only that address proves a download went through the proxy.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import select
import socket
import threading
import urllib.parse
from types import TracebackType
from typing import Any

SOURCE = "127.0.0.3"


def _connect(host: str, port: int) -> socket.socket:
    source = (SOURCE, 0) if host.startswith("127.") else None
    return socket.create_connection((host, port), timeout=30, source_address=source)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.owner._count("GET", self.path)
        target = urllib.parse.urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:
            self.send_error(400, "absolute http:// URLs only")
            return
        connection = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
        connection.sock = _connect(target.hostname, target.port or 80)
        path = target.path + (f"?{target.query}" if target.query else "")
        connection.request("GET", path, headers={"Host": target.netloc})
        response = connection.getresponse()
        body = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        connection.close()
        self.close_connection = True

    def do_CONNECT(self) -> None:
        self.server.owner._count("CONNECT", self.path)
        host, _, port = self.path.rpartition(":")
        try:
            upstream = _connect(host.strip("[]"), int(port))
        except OSError as exc:
            self.send_error(502, f"cannot reach {self.path}: {exc}")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        client = self.connection
        with upstream:
            pair = {client: upstream, upstream: client}
            while not self.server.owner._stopping.is_set():
                ready, _, _ = select.select(list(pair), [], [], 0.2)
                done = False
                for sock in ready:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        done = True
                        break
                    pair[sock].sendall(data)
                if done:
                    break
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False
    owner: ForwardProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class ForwardProxy:
    """Use as a context manager; ``url`` is what proxy settings take."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-proxy"
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for m, _ in self.requests if m == method)

    def _count(self, method: str, target: str) -> None:
        with self._lock:
            self.requests.append((method, target))

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with contextlib.suppress(RuntimeError):
            self._thread.join()
