"""Appending to ``$GITHUB_ENV`` and ``$GITHUB_PATH``, the files the runner reads after the
hook to set up the job's later steps.

Policy:
- both files must exist (the runner creates them before the hook runs): a variable that
  is unset, or names a file that is missing or not writable, is an error naming it; they
  are opened for appending without being created, each written in one call;
- a name is ``[A-Za-z_][A-Za-z0-9_]*``; ``NODE_OPTIONS`` is refused, as the runner
  ignores it from ``$GITHUB_ENV``, and a value holding a NUL (no environment can) too;
- a value with a line break takes the runner's heredoc form ``NAME<<DELIM``, with a fresh
  delimiter that occurs nowhere in the value. The runner splits lines at ``\\n`` and
  takes a ``\\r`` before it as part of the line end, so a value whose last character
  is ``\\r`` loses it (no other value changes);
- the runner puts each ``$GITHUB_PATH`` line in FRONT of PATH, so the last line wins: the
  entries are written in reverse, and the first one given ends up first in PATH.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from agent.hook import errors

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BLOCKED = ("NODE_OPTIONS",)


class GitHubFileError(errors.BadInput):
    """A ``$GITHUB_ENV`` or ``$GITHUB_PATH`` file, name or value is not acceptable."""


def env_entry(name: str, value: str) -> str:
    """One ``$GITHUB_ENV`` entry (with its final newline)."""
    if not _NAME.fullmatch(name):
        raise GitHubFileError(
            f"cannot set {name!r} through $GITHUB_ENV: a name is letters, digits and '_', "
            "not starting with a digit"
        )
    if name in _BLOCKED:
        raise GitHubFileError(
            f"cannot set {name} through $GITHUB_ENV: the runner refuses it for security; "
            "set it in the workflow's env instead"
        )
    if "\0" in value:
        raise GitHubFileError(f"the value of {name} holds a NUL byte, which no environment can")
    if "\n" not in value and "\r" not in value:
        return f"{name}={value}\n"
    delimiter = f"ghadelimiter_{errors.random_token()}"
    while delimiter in value:  # as good as impossible; checked all the same
        delimiter = f"ghadelimiter_{errors.random_token()}"
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


def path_lines(entries: Iterable[str]) -> str:
    """The ``$GITHUB_PATH`` lines that put ``entries`` in front of PATH in their order."""
    ordered = list(dict.fromkeys(entries))
    for entry in ordered:
        if not entry or "\n" in entry or "\r" in entry or "\0" in entry:
            raise GitHubFileError(f"cannot add {entry!r} to $GITHUB_PATH: not a folder path")
    return "".join(f"{entry}\n" for entry in reversed(ordered))


def _append(variable: str, environ: Mapping[str, str], text: str) -> None:
    path = environ.get(variable)
    if not path:
        raise GitHubFileError(
            f"${variable} is unset: the hook writes the job's environment there; run it "
            "as the runner's job hook or in a workflow step"
        )
    if not text:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise GitHubFileError(
            f"cannot write ${variable} ({path}): {exc.strerror}; the runner creates that file "
            "for the job, writable by the runner's user"
        ) from None
    try:
        data = text.encode("utf-8")
        while data:  # a short write is possible on any file: write the rest
            data = data[os.write(fd, data) :]
    except OSError as exc:
        raise GitHubFileError(f"cannot write ${variable} ({path}): {exc.strerror}") from None
    finally:
        os.close(fd)


def write(environ: Mapping[str, str], env: Mapping[str, str], path: Iterable[str]) -> None:
    """Append ``env`` to ``$GITHUB_ENV`` and ``path`` to ``$GITHUB_PATH`` (both checked
    first, so a bad value writes nothing)."""
    env_text = "".join(env_entry(name, value) for name, value in env.items())
    path_text = path_lines(path)
    for variable in ("GITHUB_ENV", "GITHUB_PATH"):
        if not environ.get(variable):
            _append(variable, environ, "")  # raises: unset
    _append("GITHUB_ENV", environ, env_text)
    _append("GITHUB_PATH", environ, path_text)
