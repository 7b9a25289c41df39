"""Bearer tokens for the API scopes, read from files.

Policy: a token is the file's content with surrounding whitespace stripped (Kubernetes
secrets often end in a newline). An empty or unreadable file is a configuration error,
never "no token": silently opening a scope because a secret failed to mount would hand
job code the admin API. Token values live only in :class:`Tokens`, whose ``repr`` hides
them, and are compared in constant time.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.config import loading, models

Scope = Literal["job", "admin"]


@dataclass(frozen=True)
class Tokens:
    """The configured token of each scope; ``None`` means the scope has no token."""

    job: str | None = field(default=None, repr=False)
    admin: str | None = field(default=None, repr=False)
    locked: frozenset[Scope] = frozenset()
    """Scopes never open without a token, even on the unix socket. The daemon locks the
    admin scope while it runs degraded on defaults: the file that failed may be the one
    that set the admin token, and a broken file must not hand job code the admin API."""

    def open_without_token(self, scope: Scope) -> bool:
        """Whether ``scope`` may be used on the unix socket without a token."""
        return self.get(scope) is None and scope not in self.locked

    def scopes_for(self, presented: str) -> set[Scope]:
        """The scopes that ``presented`` grants: admin implies job."""
        # Bytes, not str: compare_digest refuses non-ASCII str, and a client must not be
        # able to turn a strange token into a 500.
        given = presented.encode("utf-8", "surrogateescape")
        granted: set[Scope] = set()
        if self.admin is not None and hmac.compare_digest(given, self.admin.encode()):
            granted |= {"admin", "job"}
        if self.job is not None and hmac.compare_digest(given, self.job.encode()):
            granted.add("job")
        return granted

    def get(self, scope: Scope) -> str | None:
        """The token of ``scope``, if one is configured."""
        return self.job if scope == "job" else self.admin


def _read(path: Path, key: str) -> str:
    try:
        value = loading.read_limited(path, limit=64 * 1024, what="the token file").strip()
    except loading.ConfigError as exc:
        reason = exc.problems[0].expected
        raise loading.ConfigError(
            [loading.Problem(str(path), key, "", f"token file: {reason}; mount the secret")]
        ) from exc
    if not value:
        raise loading.ConfigError(
            [loading.Problem(str(path), key, "", "token file is empty; expected a token")]
        )
    return value


def read_tokens(settings: models.Settings) -> Tokens:
    """Read the token files the settings name."""
    server = settings.server
    job = _read(server.job_token_file, "server.job_token_file") if server.job_token_file else None
    admin = (
        _read(server.admin_token_file, "server.admin_token_file")
        if server.admin_token_file
        else None
    )
    if job is not None and job == admin:
        raise loading.ConfigError(
            [
                loading.Problem(
                    str(server.job_token_file),
                    "server.job_token_file",
                    "",
                    "the job and admin tokens are the same, which would give job code the "
                    "admin scope; use two different secrets",
                )
            ]
        )
    return Tokens(job=job, admin=admin)
