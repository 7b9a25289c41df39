"""Running an install step's command: the plan's argv, in a clean environment, with a
timeout, its output kept for the install log.

Policy:
- argv lists only; the plan's install prefix is replaced by the staging folder, so the
  command writes where nothing trusts it until it is published;
- ``python3`` in argv[0] means the agent's own interpreter (whose pip installs wheels
  with ``--target``; the wheels, not this interpreter, are what the entry keeps);
- the environment is the agent's one clean environment (:mod:`agent.kits.environ`: PATH,
  HOME, locale, temp, proxies, CA bundles, pip's and npm's own configuration variables)
  plus the step's variables: a job's or the agent's other variables never leak into an
  install;
- output is captured (the last 64 KiB) and returned for the log; a non-zero exit or a
  timeout raises :class:`RunError` quoting the end of it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agent.kits import environ, procs
from agent.store import layout

TAIL = procs.TAIL


class RunError(layout.StoreError):
    """A step's command failed; the message quotes the end of its output."""


def environment(extra: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The clean environment for a step (:func:`agent.kits.environ.clean`) plus ``extra``."""
    return environ.clean(extra, base=base)


def resolve_argv(argv: Sequence[str], *, prefix: str, staging: Path) -> list[str]:
    """The plan's argv with the prefix pointing at staging and ``python3`` at this Python."""
    out = [str(staging) if arg == prefix else arg for arg in argv]
    if out and out[0] == "python3":
        out[0] = sys.executable
    return out


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float,
    on_line: Callable[[str], None] | None = None,
    watch: Callable[[], None] | None = None,
) -> str:
    """Run ``argv``; return its combined output (the tail), or raise :class:`RunError`
    (or what ``watch``, a limit, raises: see :func:`agent.kits.procs.run`)."""
    try:
        done = procs.run(
            argv, env=env, cwd=cwd, timeout=timeout, on_line=on_line, tail=TAIL, watch=watch
        )
    except procs.ProcError as exc:
        raise RunError(str(exc)) from exc
    if not done.ok:
        raise RunError(done.describe())
    return done.output
