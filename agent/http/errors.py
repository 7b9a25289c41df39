"""API errors and the middleware that renders every error as JSON.

Policy: handlers raise :class:`ApiError` (or aiohttp's HTTP exceptions, e.g. the
router's 404/405); the middleware turns each into ``{"error": {...}}`` with the matching
status. Anything else is a bug: it is logged with its traceback and answered as a
500 that says where to look, never with the traceback itself.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

logger = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    500: "internal_error",
    503: "unavailable",
}


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
            message = f"no route {request.path}; see /openapi.json for the API's routes"
        elif isinstance(exc, web.HTTPRequestEntityTooLarge):
            message = exc.text or message
        return error_response(
            exc.status, _CODES.get(exc.status, "error"), message, details, headers
        )
    except Exception:
        logger.exception(
            "unhandled error serving %s %s",
            request.method,
            request.path,
            extra={"path": request.path},
        )
        return error_response(
            500, "internal_error", "internal error; the agent's log has the details"
        )
