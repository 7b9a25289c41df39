"""Health check specs: an HTTP request, a TCP connect, or a command.

Policy: every check has a timeout no longer than its interval (a hang is only seen by
the timeout, and checks never overlap), a failure threshold (one slow answer is not a
hang) and a start period during which failures do not count.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from agent.config import fields
from agent.config.fields import AbsolutePath, Seconds


def _address(value: str) -> str:
    fields.split_address(value)
    return value


Address = Annotated[str, AfterValidator(_address)]
Argv = Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]


class _Spec(BaseModel):
    # Deferred, like agent.config.fields.Section: built inside Settings on first use.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class _Timing(_Spec):
    interval_seconds: Seconds = Field(
        default=5.0,
        ge=0.1,
        le=3600,
        description=(
            "Seconds from the start of one check to the start of the next. Default 5 s. "
            "Range 0.1-3600 s: a shorter interval turns the check into a load test."
        ),
    )
    timeout_seconds: Seconds = Field(
        default=2.0,
        ge=0.01,
        le=3600,
        description=(
            "Seconds a check may take before it counts as failed: a hung daemon accepts "
            "connections but never answers. Default 2 s. "
            "Range 0.01-3600 s, and at most interval_seconds."
        ),
    )
    failure_threshold: int = Field(
        default=3,
        ge=1,
        le=100,
        description=(
            "Consecutive failed checks after which the service is killed and restarted "
            "(reason `unhealthy`). Default 3: one slow answer is not a hang. "
            "Range 1-100: past 100 a hung service stays in rotation too long."
        ),
    )
    start_period_seconds: Seconds = Field(
        default=60.0,
        ge=0,
        le=86400,
        description=(
            "Seconds after a start during which failed checks do not count; the first "
            "passing check ends it early. Default 60 s (ARC gives dockerd up to 120 s). "
            "Range 0 s-1 day."
        ),
    )

    @model_validator(mode="after")
    def _timeout_fits(self) -> _Timing:
        if self.timeout_seconds > self.interval_seconds:
            raise ValueError(
                f"timeout_seconds ({self.timeout_seconds:g}) is longer than interval_seconds "
                f"({self.interval_seconds:g}); expected a timeout no longer than the interval"
            )
        return self


class HttpHealth(_Timing):
    """An HTTP request over a unix socket or TCP; healthy on the expected status and body."""

    kind: Literal["http"] = Field(description="`http`: an HTTP request to the service.")
    socket: AbsolutePath | None = Field(
        default=None, description="Unix socket to send the request to (or set `address`)."
    )
    address: Address | None = Field(
        default=None, description="host:port to send the request to over TCP (or `socket`)."
    )
    method: Literal["GET", "HEAD"] = Field(
        default="GET", description="Request method. Default GET."
    )
    path: str = Field(
        default="/", pattern=r"^/\S*$", description="Request path, e.g. /_ping. Default /."
    )
    expect_status: int = Field(
        default=200,
        ge=100,
        le=599,
        description=(
            "Status that counts as healthy. Default 200. Range 100-599: the HTTP status codes."
        ),
    )
    expect_body: str | None = Field(
        default=None,
        description="Exact body (surrounding whitespace ignored) that counts as healthy, e.g. OK.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> HttpHealth:
        if (self.socket is None) == (self.address is None):
            raise ValueError("expected exactly one of socket (a unix socket path) or address")
        return self


class TcpHealth(_Timing):
    """A TCP connect; healthy when it is accepted."""

    kind: Literal["tcp"] = Field(description="`tcp`: a TCP connect to the service.")
    address: Address = Field(description="host:port to connect to, e.g. 127.0.0.1:5000.")


class ExecHealth(_Timing):
    """A command; healthy when it exits 0 within the timeout."""

    kind: Literal["exec"] = Field(description="`exec`: run a command next to the service.")
    command: Argv = Field(description="argv of the check, e.g. [docker, info].")


Health = Annotated[HttpHealth | TcpHealth | ExecHealth, Field(discriminator="kind")]
