"""JSON bodies: reading requests into pydantic models, and writing models as responses.

Policy: the size limit is checked before the body is read (Content-Length) and while
reading (chunked uploads), against the live ``server.max_request_bytes``, read here and
nowhere else; only ``application/json`` is accepted for a non-empty body; malformed
JSON is a 400 that says where; a schema violation is a 400 that names each field. Every
JSON response of a model goes through :func:`json_response`.
"""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from agent.http import errors
from agent.http.context import CONTEXT

M = TypeVar("M", bound=BaseModel)


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    """``model`` as an ``application/json`` response."""
    return web.Response(
        body=model.model_dump_json().encode(), status=status, content_type="application/json"
    )


def limit_of(request: web.Request) -> int:
    """The body limit in force (``server.max_request_bytes``, live across reloads)."""
    return int(request.app[CONTEXT].reloader.current.settings.server.max_request_bytes)


async def read_model(request: web.Request, model: type[M], *, limit: int | None = None) -> M:
    """Read and validate the body of ``request`` as ``model`` (empty body = defaults),
    within ``limit`` bytes (default: the live ``server.max_request_bytes``)."""
    if limit is None:
        limit = limit_of(request)
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit, length)
    chunks: list[bytes] = []
    total = 0
    while request.can_read_body:
        chunk = await request.content.read(limit + 1 - total)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise _too_large(limit, None)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        # An empty body means every default; a model with required fields still says
        # which are missing, through the same 400 as any other invalid body.
        return _validate(model, {})
    if request.content_type != "application/json":
        raise errors.ApiError(
            415,
            f"content type {request.content_type!r} is not supported; send application/json",
            details={"expected": "application/json", "got": request.content_type},
        )
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = (
            f" at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise errors.ApiError(400, f"malformed JSON{where}: {exc}", code="invalid_json") from exc
    return _validate(model, data)


def _validate(model: type[M], data: object) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = [
            {
                "field": ".".join(str(p) for p in e["loc"]) or "(body)",
                "message": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors(include_url=False)
        ]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise errors.ApiError(
            400, f"invalid request body: {summary}", code="validation_error", details=fields
        ) from exc


def _too_large(limit: int, got: int | None) -> errors.ApiError:
    size = f" ({got} bytes)" if got is not None else ""
    return errors.ApiError(
        413,
        f"request body{size} is over the limit of {limit} bytes (server.max_request_bytes)",
        details={"limit": limit},
    )
