"""Errors of resolving a job's features, one class per way it can fail.

Each carries ``code`` (the API's error code for it) and ``details``; which status
answers it is HTTP's choice, made in one table there.
"""

from __future__ import annotations

from typing import Any


class SourceError(Exception):
    """A request's features cannot be resolved; the message says what to change."""

    code = "invalid_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Invalid(SourceError):
    """Something the request holds is out of shape: an option for a feature it does not
    request, or a team document over its caps."""

    code = "validation_error"


class InvalidTeam(Invalid):
    """A team document (a body's, or the file at the job's commit) has errors; each is
    quoted with its source and line in ``details``."""


class InvalidLock(Invalid):
    """A lock file (a body's, or the one at the job's commit) has errors; each is in
    ``details``, with its place in the file."""


class InvalidRequest(SourceError):
    """A request, a label or an option does not parse, or names a feature twice."""

    code = "invalid_request"


class Refused(SourceError):
    """A requested feature is outside ``runner.policy`` for the repository."""

    code = "policy"


class Unresolvable(SourceError):
    """Nothing in the catalog satisfies a request on the target platform."""

    code = "unresolvable"


class GitHubUnavailable(SourceError):
    """GitHub could not say what the job needs (the team file could not be read)."""

    code = "github_error"
