"""A stand-in for the agent's job API on a unix socket, for the hook's flow tests:
scripted answers per route, every request recorded. The real agent is in
test_end_to_end.py; this one can break a stream at a chosen line, which is how an agent
that dies mid-stream looks to the hook.

It answers HTTP/1.1 with ``Connection: close`` and no length, so a stream ends when the
connection does, as the agent's does when its process dies.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Answer:
    """One scripted answer: a status and either JSON lines (a stream) or one JSON body."""

    status: int = 200
    lines: list[dict[str, Any]] = field(default_factory=list)
    body: dict[str, Any] | None = None
    cut_after: int | None = None  # close the connection after this many lines


Script = Callable[[str, dict[str, Any], dict[str, str]], Answer]


class StandIn:
    """The server; ``requests`` holds ``(path, body, headers)`` for each request."""

    def __init__(self, socket_path: Path, script: Script) -> None:
        self.socket_path = socket_path
        self.script = script
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.requests.append((self.path, body, headers))
                answer = owner.script(self.path, body, headers)
                self.send_response(answer.status)
                self.send_header("Connection", "close")
                if answer.body is not None:
                    data = json.dumps(answer.body).encode()
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                for index, line in enumerate(answer.lines):
                    if answer.cut_after is not None and index >= answer.cut_after:
                        break
                    self.wfile.write((json.dumps(line) + "\n").encode())
                    self.wfile.flush()

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(str(socket_path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.requests]
