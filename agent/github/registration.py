"""Runner registration tokens: what ``config.sh --token`` needs, minted on demand.

A registration token lives one hour, so a Secret holding one serves only the pods that
start within that hour. The chart's standalone runners mint a fresh one per pod instead,
in an init container that holds the GitHub credentials (the runner never does).

Policy:
- the runner URL is the one ``config.sh --url`` takes: ``https://HOST/ORG``,
  ``https://HOST/OWNER/REPO`` or ``https://HOST/enterprises/ENTERPRISE``; its parts go
  into the API path, so each must be a plain GitHub name;
- ``POST .../actions/runners/registration-token`` through :class:`client.Client` (its
  retries, proxies, trust and App credentials); a 403 names the permission to grant;
- the answer must carry a non-empty ``token`` of at most :data:`MAX_TOKEN_CHARS`
  printable characters, and ``expires_at``; the token is never logged nor put in an
  error.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from agent.github import client, errors

MAX_TOKEN_CHARS = 1024
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,98}[A-Za-z0-9_])?|[A-Za-z0-9]")


class BadRunnerUrl(errors.GitHubError):
    """The runner URL is not one ``config.sh --url`` takes."""


@dataclass(frozen=True)
class Scope:
    """Where runners register: the API path of its registration token, and the
    permission that path needs."""

    path: str
    need: str


@dataclass(frozen=True)
class RegistrationToken:
    token: str
    expires_at: str


def scope_of(url: str) -> Scope:
    """The registration scope of a runner URL (``config.sh --url``)."""
    parsed = urllib.parse.urlsplit(url)
    expected = "https://HOST/ORG, https://HOST/OWNER/REPO or https://HOST/enterprises/ENTERPRISE"
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise BadRunnerUrl(f"runner URL {url!r} is not an http(s) URL: expected {expected}")
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        raise BadRunnerUrl(f"runner URL {url!r} has a query, fragment or user: expected {expected}")
    parts = [p for p in parsed.path.split("/") if p]
    if not parts or len(parts) > 2 or not all(_NAME.fullmatch(p) for p in parts):
        raise BadRunnerUrl(f"runner URL {url!r} is not one config.sh takes: expected {expected}")
    if parts[0] == "enterprises":
        if len(parts) != 2:
            raise BadRunnerUrl(f"runner URL {url!r} names no enterprise: expected {expected}")
        return Scope(
            f"/enterprises/{parts[1]}/actions/runners/registration-token",
            "manage_runners:enterprise (a classic token's scope)",
        )
    if len(parts) == 1:
        return Scope(
            f"/orgs/{parts[0]}/actions/runners/registration-token",
            "organization self-hosted runners: write (or a classic token's admin:org)",
        )
    return Scope(
        f"/repos/{parts[0]}/{parts[1]}/actions/runners/registration-token",
        "administration: write (or a classic token's repo)",
    )


def check_api_for(url: str, api_url: str) -> None:
    """Refuse minting for a GitHub Enterprise Server URL at github.com's API.

    A token minted by github.com would be refused by the server's runner registration,
    after the hour's token was spent; say what to set instead.
    """
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    api_host = (urllib.parse.urlsplit(api_url).hostname or "").lower()
    if api_host == "api.github.com" and host not in ("github.com", "www.github.com"):
        raise BadRunnerUrl(
            f"runner URL {url!r} is on {host}, but github.api_url is github.com's API "
            f"({api_url}): set github.api_url to the server's, e.g. https://{host}/api/v3"
        )


async def mint(api: client.Client, url: str, *, deadline: float | None = None) -> RegistrationToken:
    """A fresh registration token for runners of ``url``."""
    scope = scope_of(url)
    answer = await api.request("POST", scope.path, need=scope.need, deadline=deadline)
    data = answer.data
    token = data.get("token") if isinstance(data, dict) else None
    expires_at = data.get("expires_at") if isinstance(data, dict) else None
    if (
        not isinstance(token, str)
        or not token
        or len(token) > MAX_TOKEN_CHARS
        or not token.isprintable()
        or any(c.isspace() for c in token)
    ):
        raise errors.BadAnswer(
            f"POST {scope.path} answered without a usable token (expected the documented "
            '{"token": ..., "expires_at": ...})'
        )
    if not isinstance(expires_at, str) or not expires_at:
        raise errors.BadAnswer(f"POST {scope.path} answered without expires_at")
    return RegistrationToken(token=token, expires_at=expires_at[:64])
