"""The hook's errors and the exit code each one means.

Policy: every failure the user can act on is a :class:`HookError` whose message names the
bad value and what to do; the code says which kind: ``1`` a feature or the setup failed,
``2`` bad input (usage, environment, files), ``3`` the agent could not be reached under
policy ``fail``. Modules raise subclasses of these beside their own concern.
"""

from __future__ import annotations

import base64
import os

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def random_token(size: int = 32) -> str:
    """``size`` random bytes as URL-safe text (a claim, a delimiter, a temporary name).

    From ``os.urandom`` directly: ``secrets`` and ``uuid`` import hmac, hashlib and
    platform, which cost the hook milliseconds at every job start for nothing it uses."""
    return base64.urlsafe_b64encode(os.urandom(size)).rstrip(b"=").decode("ascii")


class HookError(Exception):
    """The setup failed (exit 1); the message says what to do."""

    exit_code = EXIT_FAILED


class BadInput(HookError):
    """The hook's input (arguments, environment, a file) is not acceptable (exit 2)."""

    exit_code = EXIT_USAGE


class Unreachable(HookError):
    """The agent did not answer within the wait (exit 3 under policy ``fail``)."""

    exit_code = EXIT_UNREACHABLE
