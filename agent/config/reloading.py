"""Live reload: on SIGHUP, on an API request and when the config file changes.

Policy:
- a reload re-reads the file, the environment and the token files, validates all of it,
  then swaps the whole :class:`Loaded` snapshot at once; readers never see half a config;
- a bad new config keeps the old one in force, logs one error line and is reported to
  ``on_failure`` (the daemon counts it);
- fields marked restart-required keep their running value; the change is reported as
  needing a restart instead of being half-applied;
- requests coalesce: a storm of SIGHUPs costs at most one reload in progress plus one
  queued, never a pile-up;
- the file is watched by polling ``stat()`` through symlinks, which sees the symlink swap
  of a Kubernetes ConfigMap mount as well as in-place edits, deletes and re-creates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.config import loading, models, tokens

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """One generation of configuration, as a whole."""

    settings: models.Settings
    tokens: tokens.Tokens
    generation: int
    source: str
    loaded_at: float = field(default_factory=time.time)
    error: str | None = None
    """Set when running on defaults because the configuration failed (degrade mode)."""
    pending_restart: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What one reload did."""

    ok: bool
    generation: int
    changed: tuple[str, ...] = ()
    restart_required: tuple[str, ...] = ()
    error: str | None = None


def load_snapshot(
    path: Path | None, *, generation: int, environ: Mapping[str, str] | None = None
) -> Loaded:
    """Load settings and tokens together (blocking: call it from a thread on the loop)."""
    settings = loading.load(path, environ=environ)
    return Loaded(
        settings=settings,
        tokens=tokens.read_tokens(settings),
        generation=generation,
        source=str(path) if path else "defaults",
    )


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _fingerprint(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class Reloader:
    """Owns the current :class:`Loaded` snapshot and replaces it on reload."""

    def __init__(
        self,
        path: Path | None,
        initial: Loaded,
        *,
        on_swap: Callable[[Loaded, Loaded], None] | None = None,
        on_failure: Callable[[loading.ConfigError], None] | None = None,
        after_swap: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.path = path
        self.current = initial
        self._on_swap = on_swap
        self._after_swap = after_swap
        self._on_failure = on_failure
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self._reason = ""

    def request(self, reason: str) -> None:
        """Ask for a reload soon; safe to call from a signal handler, many times."""
        self._reason = reason
        self._wanted.set()

    async def reload(self, reason: str) -> Outcome:
        """Reload now (serialised with every other reload) and say what happened."""
        async with self._lock:
            old = self.current
            try:
                new, changed, restart = await asyncio.to_thread(self._prepare, old)
            except Exception as exc:  # any failure keeps the old config in force
                if isinstance(exc, loading.ConfigError):
                    error = exc
                else:
                    logger.error("config reload crashed", exc_info=exc)
                    error = loading.ConfigError(
                        [loading.Problem(old.source, "", "", f"reload failed: {exc!r}")]
                    )
                logger.error(
                    "config reload failed, keeping generation %d: %s",
                    old.generation,
                    error.one_line(),
                    extra={"reason": reason, "problems": [str(p) for p in error.problems]},
                )
                if self._on_failure:
                    self._on_failure(error)
                return Outcome(ok=False, generation=old.generation, error=str(error))
            self.current = new
            if self._on_swap:
                self._on_swap(old, new)
            logger.info(
                "config reloaded as generation %d",
                new.generation,
                extra={"reason": reason, "changed": list(changed), "restart_required": restart},
            )
            if restart:
                logger.warning(
                    "config changes need a restart to take effect: %s", ", ".join(restart)
                )
            if self._after_swap:
                # What the new config reads from disk besides itself (the catalog's
                # folders): a reload has answered only once that is in force too, and
                # under the lock, so two reloads never finish out of order.
                try:
                    await self._after_swap()
                except Exception as exc:  # the new config stays; the log says what failed
                    logger.error("reloading what the config names failed", exc_info=exc)
            return Outcome(
                ok=True, generation=new.generation, changed=changed, restart_required=restart
            )

    def _prepare(self, old: Loaded) -> tuple[Loaded, tuple[str, ...], tuple[str, ...]]:
        # Runs in a worker thread: reading, validating and diffing stay off the loop.
        new = load_snapshot(self.path, generation=old.generation + 1)
        return self._settle(old, new)

    def _settle(self, old: Loaded, new: Loaded) -> tuple[Loaded, tuple[str, ...], tuple[str, ...]]:
        before = _flatten(old.settings.model_dump(mode="json"))
        after = _flatten(new.settings.model_dump(mode="json"))
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if old.tokens != new.tokens:
            changed.append("tokens")
        # Restart-only fields keep their running value (the old snapshot always holds
        # it); a difference from the file is reported until the process restarts.
        merged = new.settings.model_dump()
        pending = []
        for path in models.restart_required_paths():
            group, key = path.split(".")
            if models.get_path(new.settings, path) != models.get_path(old.settings, path):
                pending.append(path)
            merged[group][key] = getattr(getattr(old.settings, group), key)
        try:
            settings = models.Settings.model_validate(merged)
        except ValidationError as exc:
            # E.g. the file drops the token files while the running TCP listener, which
            # only a restart removes, still needs one.
            raise loading.ConfigError(
                [
                    loading.Problem(
                        new.source,
                        "",
                        "",
                        f"conflicts with settings that only a restart changes "
                        f"({', '.join(pending)}): {exc.errors()[0]['msg']}; restart the agent",
                    )
                ]
            ) from exc
        restart = tuple(sorted(pending))
        return (
            Loaded(
                settings=settings,
                tokens=new.tokens,
                generation=new.generation,
                source=new.source,
                pending_restart=restart,
            ),
            tuple(changed),
            restart,
        )

    async def run(self) -> None:
        """Serve reload requests one at a time until cancelled."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self.reload(self._reason)

    def _watched(self) -> list[Path]:
        server = self.current.settings.server
        files = [self.path, server.job_token_file, server.admin_token_file]
        return [f for f in files if f is not None]

    async def watch(self, *, interval: Callable[[], float]) -> None:
        """Poll the config and token files; request a reload when one changes.

        Token files are watched too: Kubernetes rotates a mounted secret by swapping a
        symlink, and a rotated token must take effect without a signal.
        """
        seen = await asyncio.to_thread(lambda: {p: _fingerprint(p) for p in self._watched()})
        while True:
            await asyncio.sleep(interval())
            now = await asyncio.to_thread(lambda: {p: _fingerprint(p) for p in self._watched()})
            changed = [p for p in now if now[p] != seen.get(p)]
            seen = now
            if changed:
                gone = [p for p in changed if now[p] is None]
                self.request(f"{'deleted' if gone else 'changed'}: {', '.join(map(str, changed))}")
