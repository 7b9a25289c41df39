"""Re-running each feature's check inside the runner, where the job will use it.

Policy: the agent proved each entry works where the agent runs; the job runs here, on
another libc perhaps, through links and a read-only mount. So each check the agent sent
(the ``checks`` of the ``job`` event) runs again, with the job's PATH (the feature's
entries first, then every feature's, then the hook's PATH) and the job's variables, for at
most 60 s and 64 KiB of output. A failure names the feature, the command, what its output
had to contain and the tail of what it printed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.hook import errors

CHECK_TIMEOUT = 60.0
MAX_OUTPUT = 64 << 10


class CheckFailed(errors.HookError):
    """A feature's check did not pass in the runner."""


def run_check(
    feature: str,
    check: Mapping[str, Any],
    *,
    path: Sequence[str],
    env: Mapping[str, str],
    environ: Mapping[str, str],
    translate: Callable[[str], str],
) -> None:
    """Run ``check`` (``argv``, ``expect``) for ``feature``; raise :class:`CheckFailed`."""
    argv = [translate(str(a)) for a in check.get("argv", [])]
    expect = str(check.get("expect", ""))
    if not argv:
        return
    full = dict(environ)
    full.update(env)
    full["PATH"] = os.pathsep.join([*path, environ.get("PATH", os.defpath)])
    shown = " ".join(argv)
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full,
            timeout=CHECK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CheckFailed(
            f"{feature}: its check `{shown}` did not finish within {CHECK_TIMEOUT:.0f} s in "
            "the runner"
        ) from None
    except OSError as exc:
        raise CheckFailed(
            f"{feature}: its check `{shown}` cannot run in the runner: {exc.strerror}; the "
            "entry may be built for another platform, or the store is not mounted here"
        ) from None
    output = proc.stdout[-MAX_OUTPUT:].decode("utf-8", errors="replace")
    if proc.returncode == 0 and expect in output:
        return
    tail = " | ".join(output.strip().splitlines()[-5:]) or "nothing"
    raise CheckFailed(
        f"{feature}: its check `{shown}` failed in the runner (exit {proc.returncode}): "
        f"expected {expect!r} in its output, got: {tail}"
    )
