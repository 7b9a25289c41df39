"""The job's state between the hook's runs: what the started hook hands to ``ensure`` and
to the completed hook (the job's id and secret, the claim, the agent's socket).

Policy:
- the file is ``RUNNER_AGENT_HOOK_STATE``, else
  ``${XDG_STATE_HOME:-$HOME/.local/state}/runner-agent/job-<RUNNER_NAME>.json`` (the
  name with anything but ``[A-Za-z0-9_.-]`` made ``_``): one per runner, as a runner runs
  one job at a time and a host may carry several runners;
- its folders are made 0700; the file is written 0600 to a temporary name and renamed
  into place, and read with ``O_NOFOLLOW``: a link, something not a regular file, a
  file that is not ours or one over 64 KiB is refused (it holds a secret);
- a state left over at job start means the last job's completed hook never ran: its
  id and secret are sent as ``supersede``, so the agent completes it first.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Mapping
from typing import Any

from agent.hook import errors

MAX_BYTES = 64 << 10
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class StateError(errors.BadInput):
    """The state file cannot be used (not ours, not a file, unreadable, malformed)."""


def path_for(environ: Mapping[str, str], runner_name: str) -> str:
    """The state file of this runner's job (see the module)."""
    named = environ.get("RUNNER_AGENT_HOOK_STATE")
    if named:
        return named
    base = environ.get("XDG_STATE_HOME")
    if not base:
        home = environ.get("HOME") or os.path.expanduser("~")
        if not home or home == "~":
            raise StateError(
                "cannot place the hook's state: HOME and XDG_STATE_HOME are unset; set "
                "RUNNER_AGENT_HOOK_STATE to a file path"
            )
        base = os.path.join(home, ".local", "state")
    name = _UNSAFE.sub("_", runner_name)[:200] or "runner"
    return os.path.join(base, "runner-agent", f"job-{name}.json")


def load(path: str) -> dict[str, Any] | None:
    """The state at ``path``, or ``None`` when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(
            f"cannot read the hook's state {path}: {exc.strerror} (a link is not followed); "
            "remove it"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise StateError(
                f"the hook's state {path} is not a regular file of this user (uid "
                f"{os.geteuid()}); refusing it: remove it"
            )
        if info.st_size > MAX_BYTES:
            raise StateError(f"the hook's state {path} is over 64 KiB; remove it")
        raw = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) for k in ("id", "secret", "claim")
    ):
        raise StateError(f"the hook's state {path} is not one this hook wrote; remove it")
    return data


def save(path: str, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` (0600, atomically; folders 0700)."""
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot make the folder of the hook's state {folder}: {exc.strerror}"
        ) from None
    temp = os.path.join(folder, f".{os.path.basename(path)}.{errors.random_token(6)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(temp, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            data_bytes = json.dumps(dict(data), sort_keys=True).encode()
            while data_bytes:
                data_bytes = data_bytes[os.write(fd, data_bytes) :]
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise StateError(f"cannot write the hook's state {path}: {exc.strerror}") from None


def remove(path: str) -> None:
    """Remove the state (the job completed)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StateError(f"cannot remove the hook's state {path}: {exc.strerror}") from None
