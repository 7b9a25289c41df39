"""The CLI's HTTP client for the agent's API socket: the standard library only, so
commands that talk to a running agent start fast."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any, Literal

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


Scope = Literal["job", "admin"]


def token_file(args: argparse.Namespace, scope: Scope) -> Path | None:
    """``--token-file``, else the configured ``server.<scope>_token_file`` (for the job
    scope, the admin one when only it is set and readable: admin implies job). Every
    command that talks to the agent finds its token by this one rule."""
    if args.token_file is not None:
        return Path(args.token_file)
    try:
        server = loading.load(common.config_path(args)).server
    except loading.ConfigError:
        return None
    if scope == "admin":
        return server.admin_token_file
    if server.job_token_file is not None:
        return server.job_token_file
    admin = server.admin_token_file
    return admin if admin is not None and os.access(admin, os.R_OK) else None


def token(args: argparse.Namespace, scope: Scope = "job") -> str | None:
    """The bearer token for ``scope`` (see :func:`token_file`); exits 2 if unreadable."""
    path = token_file(args, scope)
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SystemExit(
            common.fail(f"cannot read the token file {path}: {exc.strerror}", common.EXIT_USAGE)
        ) from None


def refused(status: int, body: Any, scope: Scope) -> int | None:
    """For a 401 or 403, print why and which setting gives the token; return exit 4."""
    if status not in (401, 403):
        return None
    message = body.get("error", {}).get("message", body) if isinstance(body, dict) else body
    setting = f"server.{scope}_token_file"
    return common.fail(
        f"the agent refused the request ({status}): {message}; pass --token-file, or set "
        f"{setting} in the config this command reads (--config or $RUNNER_AGENT_CONFIG)",
        common.EXIT_AUTH,
    )


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


def call(
    args: argparse.Namespace,
    method: str,
    target: str,
    scope: Scope = "job",
    body: Any = None,
) -> tuple[int, Any] | int:
    """One request with the socket and token ``args`` name (``body`` as JSON): the
    status and JSON answer, or an exit code after printing why it failed (unreachable,
    the token refused, an error answer)."""
    token_value = token(args, scope)
    path = socket_path(args)
    raw = json.dumps(body).encode() if body is not None else None
    try:
        status, answer = request(path, method, target, token=token_value, body=raw)
    except OSError as exc:
        return common.fail(
            f"cannot reach the agent at {path}: {exc.strerror or exc}", common.EXIT_UNREACHABLE
        )
    denied = refused(status, answer, scope)
    if denied is not None:
        return denied
    if status >= 300:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        message = error.get("message", answer) if isinstance(error, dict) else answer
        return common.fail(f"{method} {target} failed ({status}): {message}")
    return status, answer
