"""The API's route table and the OpenAPI document generated from it.

Policy: a route is declared once, with its scope and its models; the router, the auth
middleware and /openapi.json all read the same table, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from agent import __version__
from agent.config.tokens import Scope
from agent.http import models

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One API endpoint."""

    method: str
    path: str
    handler: Handler
    scope: Scope | None
    summary: str
    response: type[BaseModel] | None = None
    request: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    media_type: str = "application/json"
    """``application/x-ndjson`` for a stream of ``response`` objects, one per line."""


_AUTH_ERRORS = (401, 403)


def openapi(routes: list[Route]) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document for ``routes``."""
    used: list[type[BaseModel]] = [models.ErrorBody]
    for route in routes:
        for model in (route.request, route.response):
            if model is not None and model not in used:
                used.append(model)
    refs, schema = models_json_schema(
        [(m, "validation" if _is_request(m, routes) else "serialization") for m in used],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {"summary": route.summary, "responses": {}}
        if route.scope is not None:
            op["security"] = [{"bearer": []}]
            op["x-scope"] = route.scope
        if route.request is not None:
            ref = refs[(route.request, "validation")]
            op["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": ref}},
            }
        if route.response is not None:
            ref = refs[(route.response, "serialization")]
            op["responses"]["200"] = {
                "description": "OK" if route.media_type == "application/json" else "One per line",
                "content": {route.media_type: {"schema": ref}},
            }
        else:
            op["responses"]["200"] = {"description": "OK"}
        error_ref = refs[(models.ErrorBody, "serialization")]
        statuses = set(route.errors) | (set(_AUTH_ERRORS) if route.scope else set())
        if route.request is not None:
            statuses |= {400, 408, 413, 415}
        for status in sorted(statuses):
            op["responses"][str(status)] = {
                "description": "Error",
                "content": {"application/json": {"schema": error_ref}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "runner-agent API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _is_request(model: type[BaseModel], routes: list[Route]) -> bool:
    return any(r.request is model for r in routes)
