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
        granted: set[Scope] = set()
        if self.admin is not None and hmac.compare_digest(presented, self.admin):
            granted |= {"admin", "job"}
        if self.job is not None and hmac.compare_digest(presented, self.job):
            granted.add("job")
        return granted

    def get(self, scope: Scope) -> str | None:
        """The token of ``scope``, if one is configured."""
        return self.job if scope == "job" else self.admin


def _read(path: Path, key: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise loading.ConfigError(
            [
                loading.Problem(
                    str(path), key, "", f"token file cannot be read ({reason}); mount the secret"
                )
            ]
        ) from exc
    if not value:
        raise loading.ConfigError(
            [loading.Problem(str(path), key, "", "token file is empty; expected a token")]
        )
    return value


def read_tokens(settings: models.Settings) -> Tokens:
    """Read the token files the settings name."""
    server = settings.server
    return Tokens(
        job=_read(server.job_token_file, "server.job_token_file")
        if server.job_token_file
        else None,
        admin=_read(server.admin_token_file, "server.admin_token_file")
        if server.admin_token_file
        else None,
    )
