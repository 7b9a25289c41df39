"""What the CLI's commands share: exit codes and loading the settings."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.config import loading, models

EXIT_OK = 0
EXIT_BAD = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
"""The agent refused the token (401) or its scope (403)."""


def config_path(args: argparse.Namespace) -> Path | None:
    """``--config``, else ``RUNNER_AGENT_CONFIG``, else none."""
    path: Path | None = getattr(args, "config", None)
    return path if path is not None else loading.config_path_from_env()


def settings(args: argparse.Namespace) -> models.Settings:
    """The effective settings, or exit 2 with the problems on stderr."""
    try:
        return loading.load(config_path(args))
    except loading.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def fail(message: str, code: int = EXIT_BAD) -> int:
    """Print ``runner-agent: message`` on stderr and return ``code``."""
    print(f"runner-agent: {message}", file=sys.stderr)
    return code
