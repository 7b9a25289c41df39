"""What can go wrong talking to GitHub, one class per thing to fix.

Every message names what to do (the permission to grant, the setting to check) and never
holds a token, a JWT or a private key.
"""

from __future__ import annotations


class GitHubError(Exception):
    """A GitHub request failed; the message says why and what to fix."""


class NotConfigured(GitHubError):
    """No github credentials are set."""


class BadCredentials(GitHubError):
    """GitHub refused the credentials (401), or a credential file cannot be used."""


class PermissionDenied(GitHubError):
    """403 without a rate limit: the token lacks a permission (which one is named)."""


class NotFound(GitHubError):
    """404: the resource does not exist, or the token cannot see it."""


class RateLimited(GitHubError):
    """Still rate-limited when the deadline or the attempts ran out."""


class Unavailable(GitHubError):
    """5xx answers, timeouts or connection failures until the attempts ran out."""


class BadAnswer(GitHubError):
    """An answer that is not the JSON GitHub documents."""
