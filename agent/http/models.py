"""Pydantic models of every API body, in and out.

Policy: request models forbid unknown fields (a typo is a 400 naming the field, not a
silently ignored option); response models are what /openapi.json documents.

Every point in time in a body is a :data:`Timestamp`: held as Unix time, written as
RFC 3339 in UTC with milliseconds, the form of the agent's log lines
(``2026-12-02T01:10:18.826Z``), so a body and a log line can be put side by side. Unix
time is written beside it, as a ``*_epoch`` field, only where a machine compares the
value against its own clock (a lease's expiry, which a hook may check with
``date +%s``); everywhere else a parser of RFC 3339 is the way to a number.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema


def rfc3339(when: float) -> str:
    """``when`` (Unix time) in RFC 3339, UTC, milliseconds: the log lines' form."""
    stamp = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
    return stamp.removesuffix("+00:00") + "Z"


Timestamp = Annotated[
    float,
    PlainSerializer(rfc3339, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A point in time: Unix time inside the agent, RFC 3339 (UTC) in every body."""


class ApiModel(BaseModel):
    """Every API body. Validators are built on first use, not at import: the API's models
    are many, and most are never needed in a given agent's lifetime."""

    model_config = ConfigDict(defer_build=True)


class ApiRequest(ApiModel):
    """A request body: unknown fields are a 400 that names them."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class ErrorDetail(ApiModel):
    """The inside of every error response."""

    code: str = Field(description="Stable machine-readable code, e.g. validation_error.")
    message: str = Field(description="What went wrong and what to do about it.")
    details: Any = Field(default=None, description="Structured context, e.g. the bad fields.")


class ErrorBody(ApiModel):
    """Every non-2xx API response."""

    error: ErrorDetail


class ConditionModel(ApiModel):
    """One readiness condition."""

    name: str
    ok: bool
    message: str
    since: Timestamp = Field(description="When it last changed state.")


class ConfigInfo(ApiModel):
    """Which configuration is in force."""

    generation: int = Field(description="1 at start, +1 on each successful reload.")
    source: str = Field(description="The file it came from, or `defaults`.")
    loaded_at: Timestamp = Field(description="When it was loaded.")
    error: str | None = Field(
        default=None, description="Set when running on defaults after a config error."
    )
    pending_restart: list[str] = Field(
        default_factory=list, description="Changed settings that only a restart applies."
    )


class StatusResponse(ApiModel):
    """GET /v1/status."""

    version: str
    python: str
    pid: int
    started_at: Timestamp = Field(description="When the agent started.")
    uptime_seconds: float
    ready: bool
    config: ConfigInfo
    conditions: list[ConditionModel]


class ConfigResponse(ApiModel):
    """GET /v1/config: the effective configuration; token values are never included."""

    config: ConfigInfo
    settings: dict[str, Any]
    tokens: dict[str, bool] = Field(
        description="Whether each scope has a token configured (the values are secret)."
    )


class ReloadRequest(ApiRequest):
    """POST /v1/reload. The body is optional."""

    reason: str | None = Field(
        default=None, max_length=200, description="Why, for the agent's log."
    )


class ReloadResponse(ApiModel):
    """The outcome of a successful reload."""

    generation: int
    changed: list[str] = Field(description="Dotted paths of settings that changed.")
    restart_required: list[str] = Field(
        description="Changed settings that keep their running value until a restart."
    )
