"""API errors and the middleware that renders every error as JSON.

Policy: handlers raise :class:`ApiError` (or aiohttp's HTTP exceptions, e.g. the
router's 404/405, or the resolution engine's :class:`agent.sources.errors.SourceError`,
whose status :data:`SOURCE_STATUS` gives); the middleware turns each into
``{"error": {...}}`` with the matching status. Anything else is a bug: it is logged
with its traceback and answered as a 500 that says where to look, never with the
traceback itself. A client that went away mid-request (:class:`ClientGone`, or any
connection error once its connection is closed) is no error of the agent's: it is
logged at debug level and counted as 499, nginx's "client closed request".
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from agent.sources import errors as source_errors

logger = logging.getLogger(__name__)

NOT_FOUND_HINT = web.AppKey("not_found_hint", str)
"""What a 404 of the router points to, per application (default: the API's document)."""
_API_HINT = "see /openapi.json for the API's routes"

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    499: "client_closed_request",
    500: "internal_error",
    503: "unavailable",
}


SOURCE_STATUS: dict[type[source_errors.SourceError], int] = {
    source_errors.Invalid: 400,
    source_errors.InvalidRequest: 400,
    source_errors.Refused: 403,
    source_errors.Unresolvable: 422,
    source_errors.GitHubUnavailable: 502,
}
"""The status answering each way a request's features cannot be resolved."""


def source_status(exc: source_errors.SourceError) -> int:
    """The status of ``exc``: its class's, or its nearest base's in the table."""
    for cls in type(exc).__mro__:
        if cls in SOURCE_STATUS:
            return SOURCE_STATUS[cls]
    return 400


class ApiError(Exception):
    """An error answered to the client as JSON with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details
        self.headers = headers or {}


CLIENT_CLOSED = 499
"""The status a request is counted with when its client went away (nginx's)."""


class ClientGone(Exception):
    """The client closed its connection before the request was read or answered."""


def client_gone(request: web.Request, exc: BaseException) -> bool:
    """Whether ``exc`` means the client of ``request`` went away."""
    if isinstance(exc, ClientGone):
        return True
    transport = request.transport
    closed = transport is None or transport.is_closing()
    return closed and isinstance(exc, ConnectionError)


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON error response in the agent's one error shape."""
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render :class:`ApiError`, aiohttp HTTP errors and crashes as JSON errors."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    except source_errors.SourceError as exc:
        return error_response(source_status(exc), exc.code, exc.message, exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {}
        details: Any = None
        message = exc.reason
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = sorted(exc.allowed_methods)
            headers["Allow"] = ",".join(allowed)
            details = {"allowed": allowed}
            message = (
                f"method {request.method} is not allowed on {request.path}; "
                f"use {', '.join(allowed)}"
            )
        elif isinstance(exc, web.HTTPNotFound):
            message = f"no route {request.path}; {request.app.get(NOT_FOUND_HINT, _API_HINT)}"
        elif isinstance(exc, web.HTTPRequestEntityTooLarge):
            message = exc.text or message
        return error_response(
            exc.status, _CODES.get(exc.status, "error"), message, details, headers
        )
    except Exception as exc:
        if client_gone(request, exc):
            logger.debug(
                "client went away during %s %s: %s",
                request.method,
                request.path,
                exc,
                extra={"path": request.path},
            )
            # Nobody reads it; the status is for the request metrics.
            return web.Response(status=CLIENT_CLOSED, reason="Client Closed Request")
        logger.exception(
            "unhandled error serving %s %s",
            request.method,
            request.path,
            extra={"path": request.path},
        )
        return error_response(
            500, "internal_error", "internal error; the agent's log has the details"
        )
