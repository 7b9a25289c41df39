"""Scope checks for the API.

Policy, for an endpoint of scope S (``job`` or ``admin``; admin implies job):
- a presented bearer token must be one of the configured tokens (else 401) and grant S
  (else 403: e.g. the job token on an admin endpoint);
- without a token, the request passes only on the unix socket and only while S has no
  token configured (and is not locked, see :class:`~agent.config.tokens.Tokens`): the
  socket's file mode is then the access control, as with docker.sock. Over TCP a token
  is always required (401).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from aiohttp import web

from agent.config import reloading, tokens
from agent.http import errors

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="runner-agent"'}


def _on_unix_socket(request: web.Request) -> bool:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


def check(
    request: web.Request, scope: tokens.Scope, current: Callable[[], reloading.Loaded]
) -> None:
    """Raise :class:`~agent.http.errors.ApiError` unless ``request`` may use ``scope``."""
    loaded = current()
    configured = loaded.tokens
    header = request.headers.get("Authorization")
    if scope in configured.locked and not _grants(configured, header, scope):
        # Degraded on a broken config: refuse with the reason, so a job's hook (and the
        # person reading its log) sees what to fix instead of a bare 401.
        raise errors.ApiError(
            503,
            f"the agent's configuration is invalid, so it serves no {scope} requests until it "
            f"is fixed (it reloads by itself): {loaded.error}",
            code="degraded",
            details={"config_error": loaded.error},
        )
    if header is None:
        if configured.open_without_token(scope) and _on_unix_socket(request):
            return
        raise errors.ApiError(
            401,
            f"this endpoint needs a bearer token of the {scope} scope: "
            "send 'Authorization: Bearer <token>'",
            headers=_CHALLENGE,
        )
    kind, _, presented = header.partition(" ")
    presented = presented.strip()
    if kind.lower() != "bearer" or not presented:
        raise errors.ApiError(
            401,
            "malformed Authorization header; expected 'Bearer <token>'",
            headers=_CHALLENGE,
        )
    granted = configured.scopes_for(presented)
    if not granted:
        raise errors.ApiError(401, "the bearer token is not valid", headers=_CHALLENGE)
    if scope not in granted:
        raise errors.ApiError(
            403,
            f"this endpoint needs the {scope} scope, which the presented token does not grant",
            details={"required_scope": scope, "granted": sorted(granted)},
        )


def presents(
    request: web.Request, scope: tokens.Scope, current: Callable[[], reloading.Loaded]
) -> bool:
    """Whether ``request`` presents a configured bearer token that grants ``scope``: not
    merely open access on the socket (for what only a real token holder may do)."""
    return _grants(current().tokens, request.headers.get("Authorization"), scope)


def _grants(configured: tokens.Tokens, header: str | None, scope: tokens.Scope) -> bool:
    kind, _, presented = (header or "").partition(" ")
    presented = presented.strip()
    return (
        kind.lower() == "bearer" and bool(presented) and scope in configured.scopes_for(presented)
    )
