"""JSON bodies: reading requests into pydantic models, and writing models as responses.

Policy: the size limit is checked before the body is read (Content-Length) and while
reading (chunked uploads), against the live ``server.max_request_bytes``, read here and
nowhere else; the whole body must arrive within ``server.body_timeout_seconds`` (else
408), and a client that disconnects meanwhile is :class:`errors.ClientGone` (499, never
500); only ``application/json`` is accepted for a non-empty body; malformed JSON is a
400 that says where; so is JSON nested deeper than :data:`MAX_DEPTH` (checked by a scan
before parsing, so no parser or validator recurses that deep) and a number over
Python's digit limit; a schema violation is a 400 that names each field. A body over
:data:`INLINE_BYTES` is parsed and validated in a thread, so the loop keeps answering
``/healthz``. Every JSON response of a model goes through :func:`json_response`.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from itertools import accumulate
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from agent.http import errors
from agent.http.context import CONTEXT

M = TypeVar("M", bound=BaseModel)

MAX_DEPTH = 32
"""The deepest JSON nesting accepted; API documents need a handful of levels."""
INLINE_BYTES = 16 * 1024
"""Bodies up to this size are parsed on the loop (well under a millisecond)."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = [0] * 256
for _c in b"[{":
    _STEP[_c] = 1
for _c in b"]}":
    _STEP[_c] = -1


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    """``model`` as an ``application/json`` response."""
    return web.Response(
        body=model.model_dump_json().encode(), status=status, content_type="application/json"
    )


async def read_model(request: web.Request, model: type[M], *, limit: int | None = None) -> M:
    """Read and validate the body of ``request`` as ``model`` (empty body = defaults),
    within ``limit`` bytes (default: the live ``server.max_request_bytes``) and the live
    ``server.body_timeout_seconds``."""
    server = request.app[CONTEXT].reloader.current.settings.server
    if limit is None:
        limit = int(server.max_request_bytes)
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit, length)
    try:
        async with asyncio.timeout(server.body_timeout_seconds):
            body = await _read(request, limit)
    except TimeoutError as exc:
        raise errors.ApiError(
            408,
            f"the request body did not arrive within {server.body_timeout_seconds:g} s "
            "(server.body_timeout_seconds)",
            details={"limit_seconds": server.body_timeout_seconds},
        ) from exc
    except ConnectionError as exc:
        raise errors.ClientGone(f"the client went away while sending the body: {exc}") from exc
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
    if len(body) > INLINE_BYTES:
        return await asyncio.to_thread(_parse, model, body)
    return _parse(model, body)


async def _read(request: web.Request, limit: int) -> bytes:
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
    return b"".join(chunks)


def _parse(model: type[M], body: bytes) -> M:
    depth = nesting(body)
    if depth > MAX_DEPTH:
        raise errors.ApiError(
            400,
            f"JSON nested {depth} levels deep is over the limit of {MAX_DEPTH} levels",
            code="invalid_json",
            details={"limit": MAX_DEPTH},
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
    except (ValueError, RecursionError) as exc:
        # Python's integer digit limit (CVE-2020-10735), or nesting the scan missed.
        digits = sys.get_int_max_str_digits()
        raise errors.ApiError(
            400,
            f"a number in the body has over {digits} digits, the limit for integers"
            if isinstance(exc, ValueError)
            else f"JSON nested over the limit of {MAX_DEPTH} levels",
            code="invalid_json",
            details={"limit": digits if isinstance(exc, ValueError) else MAX_DEPTH},
        ) from exc
    return _validate(model, data)


def nesting(body: bytes) -> int:
    """The deepest ``[``/``{`` nesting of the JSON text ``body``, outside strings; 0
    when it has too few brackets to be over :data:`MAX_DEPTH` at all."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return 0  # cannot be deeper than the limit: skip the scan
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


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
