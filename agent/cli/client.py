"""The CLI's HTTP client for the agent's API socket: the standard library only, so
commands that talk to a running agent start fast."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path


class UnixConnection(http.client.HTTPConnection):
    """An HTTP connection over the unix socket at ``path``."""

    def __init__(self, path: Path | str, *, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock
