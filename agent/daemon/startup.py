"""What runs before the daemon's loop: the startup configuration (with its degrade-mode
fallback) and the event loop's factory.

Policy: a bad configuration at startup either raises (``exit``, the CLI default) or
falls back to the environment, then the built-in defaults, with both API scopes locked
until a good file loads (``degrade``); uvloop is used when it is installed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from agent.config import loading, models, reloading, tokens

OnConfigError = Literal["exit", "degrade"]


def initial_config(
    path: Path | None, *, on_error: OnConfigError
) -> tuple[reloading.Loaded, loading.ConfigError | None]:
    """Load the startup configuration, or fall back to defaults in degrade mode.

    In degrade mode the environment alone is tried first, so settings a pod passes by
    environment (the probe address above all) survive a broken file; if even that fails,
    the built-in defaults are used. Either way both API scopes are locked until a good
    configuration loads: the broken file may be the one that set the tokens.
    """
    try:
        return reloading.load_snapshot(path, generation=1), None
    except loading.ConfigError as exc:
        if on_error == "exit":
            raise
        error = exc
    message = error.one_line()
    try:
        fallback = reloading.load_snapshot(None, generation=1)
        settings, found = fallback.settings, fallback.tokens
        source = f"{path or 'environment'} (invalid; running on the environment and defaults)"
    except loading.ConfigError:
        settings, found, source = models.Settings(), tokens.Tokens(), "defaults"
    degraded = reloading.Loaded(
        settings=settings,
        tokens=dataclasses.replace(found, locked=frozenset({"admin", "job"})),
        generation=1,
        source=source,
        error=message,
    )
    return degraded, error


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or ``None`` (asyncio's own) when it is not installed."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
