"""GitHub credentials: a token file, or a GitHub App's installation token.

Policy:
- a token file is re-read at every use (non-blocking, regular files only, at most 16 KiB),
  so a rotated secret applies; its content is opaque: no assumption on length or form;
- an App's JWT is RS256 (PyJWT with ``cryptography``, imported on first use so the agent
  starts without them), ``iat`` 60 s in the past (GitHub's advice for clock drift),
  ``exp`` 9 minutes ahead (GitHub allows at most 10), ``iss`` the app id or client id;
- the installation token is cached until :data:`REFRESH_BEFORE` seconds before its
  ``expires_at``; one exchange at a time, so concurrent jobs do not mint several;
- nothing secret reaches a log or an error: errors name the file and the setting.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from agent.config.github import GitHubSettings
from agent.github import errors
from agent.kits import secretfiles

MAX_SECRET_BYTES = 16 * 1024
REFRESH_BEFORE = 300.0
"""Seconds before ``expires_at`` when a cached installation token is replaced."""
JWT_BACKDATE = 60
JWT_LIFETIME = 540


def read_secret(path: Path, setting: str, *, single_line: bool = False) -> bytes:
    """The file's bytes, stripped; :class:`errors.BadCredentials` naming ``setting``."""
    try:
        return secretfiles.read(path, setting, limit=MAX_SECRET_BYTES, single_line=single_line)
    except secretfiles.SecretFileError as exc:
        raise errors.BadCredentials(str(exc)) from exc


class Credentials(Protocol):
    """Gives the Authorization header's value for the next request."""

    async def authorization(self) -> str:
        """``token ...`` or ``Bearer ...``."""
        ...

    def forget(self) -> None:
        """A 401 came back: drop what is cached, so the next request gets a fresh one."""


class TokenFile:
    """A token read from ``github.token_file`` at every use."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def authorization(self) -> str:
        raw = await asyncio.to_thread(read_secret, self.path, "github.token_file", single_line=True)
        return f"Bearer {raw.decode()}"

    def forget(self) -> None:
        """Nothing is cached."""


def mint_jwt(issuer: str, key_pem: bytes, now: float | None = None) -> str:
    """A GitHub App JWT for ``issuer`` (app id or client id), signed with ``key_pem``."""
    import jwt  # lazily: PyJWT and cryptography cost startup time only Apps need

    issued = int(now if now is not None else time.time())
    claims = {"iat": issued - JWT_BACKDATE, "exp": issued + JWT_LIFETIME, "iss": issuer}
    try:
        return jwt.encode(claims, key_pem, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        # The key's text must not reach the message: name the file's setting only.
        raise errors.BadCredentials(
            f"github.private_key_file is not an RSA private key in PEM form ({type(exc).__name__})"
        ) from None


Exchange = Callable[[str, str], Awaitable[dict[str, Any]]]
"""POST a path with a JWT as the bearer; the JSON answer."""


class App:
    """A GitHub App's installation token, minted from its JWT and cached."""

    def __init__(self, settings: GitHubSettings, exchange: Exchange) -> None:
        assert settings.private_key_file is not None
        assert settings.installation_id is not None
        self.issuer = str(settings.app_id or settings.client_id)
        self.key_file = settings.private_key_file
        self.installation = settings.installation_id
        self._exchange = exchange
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.exchanges = 0
        """How many installation tokens were minted (the benches and tests count them)."""

    async def authorization(self) -> str:
        async with self._lock:
            if self._token is None or time.time() >= self._expires - REFRESH_BEFORE:
                await self._mint()
            assert self._token is not None
            return f"Bearer {self._token}"

    def forget(self) -> None:
        self._token = None

    async def _mint(self) -> None:
        key = await asyncio.to_thread(read_secret, self.key_file, "github.private_key_file")
        token_jwt = await asyncio.to_thread(mint_jwt, self.issuer, key)
        answer = await self._exchange(
            f"/app/installations/{self.installation}/access_tokens", token_jwt
        )
        token, expires = answer.get("token"), answer.get("expires_at")
        if not isinstance(token, str) or not token or not isinstance(expires, str):
            raise errors.BadAnswer(
                "the installation token answer has no token and expires_at; is "
                "github.api_url GitHub's API?"
            )
        try:
            when = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00"))
        except ValueError as exc:
            raise errors.BadAnswer(f"expires_at {expires[:40]!r} is not a time") from exc
        # Replaced REFRESH_BEFORE ahead, or at half its life when it is shorter (a skewed
        # clock must not mint a token per request).
        life = when.timestamp() - time.time()
        self._token = token
        self._expires = when.timestamp() - max(0.0, min(REFRESH_BEFORE, life / 2)) + REFRESH_BEFORE
        self.exchanges += 1


def from_settings(settings: GitHubSettings, exchange: Exchange) -> Credentials:
    """The credentials ``settings`` configure; :class:`errors.NotConfigured` if none."""
    if settings.token_file is not None:
        return TokenFile(settings.token_file)
    if settings.private_key_file is not None:
        return App(settings, exchange)
    raise errors.NotConfigured(
        "no GitHub credentials: set github.token_file, or a GitHub App (github.app_id, "
        "github.installation_id, github.private_key_file)"
    )
