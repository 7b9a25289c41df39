"""The ``github`` settings: how the agent reaches GitHub's REST API, and as whom.

Policy:
- credentials are files, never values in the config: a fine-grained (or classic) token
  file, or a GitHub App (app id or client id, installation id, private key file). Not
  both: which one acts would be a guess. None: the agent makes no GitHub request;
- ``api_url`` is github.com's API by default, ``https://HOST/api/v3`` for GitHub
  Enterprise Server; https only (a token must not cross the network in the clear), except
  a loopback address, for tests and local stubs;
- the installer's CA bundle and proxy settings apply to these requests too (one trust
  configuration per agent).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Annotated

from pydantic import AfterValidator, ByteSize, Field, model_validator

from agent.config.fields import AbsolutePath, Seconds, Section, Size


def _check_api_url(value: str) -> str:
    parsed = urllib.parse.urlsplit(value)
    expected = "expected https://api.github.com or https://HOST/api/v3 (GitHub Enterprise)"
    if not parsed.hostname or parsed.query or parsed.fragment or " " in value:
        raise ValueError(f"{value!r} is not an API URL; {expected}")
    if parsed.scheme != "https":
        try:
            loopback = ipaddress.ip_address(parsed.hostname).is_loopback
        except ValueError:
            loopback = parsed.hostname == "localhost"
        if parsed.scheme != "http" or not loopback:
            raise ValueError(
                f"{value!r}: the token would cross the network in the clear; {expected} "
                "(http:// only for a loopback address)"
            )
    return value.rstrip("/")


ApiURL = Annotated[str, AfterValidator(_check_api_url)]


class GitHubSettings(Section):
    """GitHub's REST API: where, and with which credentials."""

    api_url: ApiURL = Field(
        default="https://api.github.com",
        description=(
            "The REST API's base URL: https://api.github.com, or https://HOST/api/v3 for "
            "GitHub Enterprise Server. https only (http:// for a loopback address). "
            "Default https://api.github.com."
        ),
    )
    token_file: AbsolutePath | None = Field(
        default=None,
        description=(
            "File holding a token (fine-grained: contents read and actions read on the "
            "repositories whose jobs this agent serves). Re-read on reload. Not with "
            "app_id. Default none."
        ),
    )
    app_id: int | None = Field(
        default=None,
        ge=1,
        le=2**63 - 1,
        description=(
            "A GitHub App's id (or set client_id): the agent signs a JWT with "
            "private_key_file and exchanges it for an installation token. Range 1 to "
            "2^63-1 (GitHub's ids are 64-bit). Default none."
        ),
    )
    client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="A GitHub App's client id (Iv1..., Iv23...), instead of app_id. Default none.",
    )
    installation_id: int | None = Field(
        default=None,
        ge=1,
        le=2**63 - 1,
        description=(
            "The App's installation id on the organisation or repositories. Range 1 to "
            "2^63-1 (GitHub's ids are 64-bit). Default none."
        ),
    )
    private_key_file: AbsolutePath | None = Field(
        default=None,
        description="The App's private key (PEM), a file. Default none.",
    )
    request_timeout_seconds: Seconds = Field(
        default=10.0,
        ge=1,
        le=120,
        description=(
            "Longest wait for one GitHub request, in seconds. Default 10 s. Range 1-120 s: "
            "a job's setup waits on it."
        ),
    )
    max_attempts: int = Field(
        default=4,
        ge=1,
        le=10,
        description=(
            "Attempts of one request through 5xx answers, timeouts and rate limits (with "
            "backoff, and Retry-After or X-RateLimit-Reset honoured within the deadline). "
            "Range 1-10. Default 4."
        ),
    )

    webhook_secret_file: AbsolutePath | None = Field(
        default=None,
        description=(
            "File holding the webhook's secret: deliveries to server.webhook_address must "
            "carry X-Hub-Signature-256 made with it, or get 401. Re-read on reload. "
            "Default none (the webhook listener refuses every delivery)."
        ),
    )
    webhook_max_bytes: Size = Field(
        default=ByteSize(1024 * 1024),
        ge=1024,
        le=25 * 1024 * 1024,
        description=(
            "Largest webhook delivery accepted, in bytes. Default 1 MiB (a workflow_job "
            "delivery is ~10 KB). Range 1 KiB-25 MiB (GitHub's own cap)."
        ),
    )
    scale_sets: dict[
        Annotated[str, Field(min_length=1, max_length=100)],
        Annotated[list[str], Field(max_length=64)],
    ] = Field(
        default_factory=dict,
        max_length=256,
        description=(
            "Pre-warming: a scale set's (or runner label's) menu, by the label a queued "
            "job's runs-on names, e.g. {arc-gpu: ['feature:cuda@12']}. Range 0 to 256 sets "
            "of 64 labels. Default none."
        ),
    )
    prewarm_queue: int = Field(
        default=64,
        ge=1,
        le=4096,
        description=(
            "Queued jobs waiting to be pre-warmed at most; a delivery beyond it is "
            "answered 503 (GitHub shows it failed). Range 1 to 4096. Default 64."
        ),
    )

    @model_validator(mode="after")
    def _one_identity(self) -> GitHubSettings:
        app = [self.app_id or self.client_id, self.installation_id, self.private_key_file]
        if self.token_file is not None and any(app):
            raise ValueError(
                "github.token_file and a GitHub App (app_id/client_id, installation_id, "
                "private_key_file) are both set; keep one of them"
            )
        if any(app) and not all(app):
            missing = [
                name
                for name, value in (
                    ("app_id or client_id", app[0]),
                    ("installation_id", app[1]),
                    ("private_key_file", app[2]),
                )
                if not value
            ]
            raise ValueError(f"a GitHub App needs {', '.join(missing)} too")
        if self.app_id is not None and self.client_id is not None:
            raise ValueError("github.app_id and github.client_id are both set; keep one")
        return self

    @property
    def configured(self) -> bool:
        """Whether any credentials are set (else the agent makes no GitHub request)."""
        return self.token_file is not None or self.private_key_file is not None
