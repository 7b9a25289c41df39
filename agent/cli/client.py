"""The CLI's HTTP client for the agent's API socket: the standard library only, so
commands that talk to a running agent start fast."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any

from agent.cli import common
from agent.config import loading


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--socket`` and ``--token-file``, for every command that talks to the agent."""
    parser.add_argument(
        "--socket",
        type=Path,
        default=None,
        help=f"API socket (default: ${loading.ENV_SOCKET}, else the configured one)",
    )
    parser.add_argument("--token-file", type=Path, default=None, help="bearer token file")


def socket_path(args: argparse.Namespace) -> Path:
    """``--socket``, else ``RUNNER_AGENT_SOCKET``, else the configured (or default) one."""
    if args.socket is not None:
        return Path(args.socket)
    env = os.environ.get(loading.ENV_SOCKET)
    if env:
        return Path(env)
    from agent.config import models, userpaths

    try:
        return loading.load(common.config_path(args)).server.socket_path
    except loading.ConfigError:
        # The agent would not start on that config either; its defaults, by the same rule.
        if os.geteuid() != 0:
            return userpaths.socket_path(os.environ)
        return models.ServerSettings().socket_path


def token(args: argparse.Namespace, default: Path | None = None) -> str | None:
    """The bearer token from ``--token-file`` (else ``default``); exits 2 if unreadable."""
    path = args.token_file or default
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SystemExit(
            common.fail(f"cannot read the token file {path}: {exc.strerror}", common.EXIT_USAGE)
        ) from None


def request(
    path: Path, method: str, target: str, *, token: str | None, body: bytes | None = None
) -> tuple[int, Any]:
    """Send one request over the unix socket at ``path``; the status and the JSON body
    (or the text, when it is not JSON)."""
    conn = UnixConnection(path, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, target, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")
