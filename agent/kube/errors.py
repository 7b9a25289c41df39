"""What can go wrong talking to the Kubernetes API, one class per thing to fix.

Every message names what to do (the setting or variable to set, the RBAC rule to
grant) and never holds the ServiceAccount token. ``transient`` says whether a later
attempt may succeed (the annotator retries those, with backoff), ``retry_after`` what
the server asked to wait.
"""

from __future__ import annotations


class KubeError(Exception):
    """A Kubernetes request failed; the message says why and what to fix."""

    transient = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotConfigured(KubeError):
    """The API server, the pod, its namespace, the token or the CA cannot be found or
    used: a setting, a variable or a mounted file is missing."""


class Unauthorized(KubeError):
    """401: the API server does not accept the token."""


class Forbidden(KubeError):
    """403: the ServiceAccount may not patch the pod (an RBAC rule is missing)."""


class NotFound(KubeError):
    """404: no such pod in that namespace (the pod's name or namespace is wrong)."""


class Invalid(KubeError):
    """422 or another 4xx: the API server refused the change itself."""


class Untrusted(KubeError):
    """The API server's certificate does not chain to the configured CA."""


class BadAnswer(KubeError):
    """An answer that is not what the API server sends (too large, a redirect)."""


class Unavailable(KubeError):
    """5xx, 409, 429, a timeout or a connection failure: worth another attempt."""

    transient = True
