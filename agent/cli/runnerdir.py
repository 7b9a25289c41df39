"""A runner folder's files, reached by descriptor: read and written without following a
link, and the runner's ``.env`` format.

Policy: a file is written under a temporary name in its folder (opened ``O_NOFOLLOW``,
``O_EXCL``) and renamed over its target, so a link planted at the target is replaced,
never followed, and a reader sees the old file or the new one, never half of one. A
``.env`` that is itself a link is refused: replacing the user's link would silently
change their set-up, and writing through it would edit a file we were not given.
``.env`` is read the way the runner's listener reads it (actions/runner ``Program.cs``,
``LoadAndSetEnv``): ``KEY=VALUE`` lines split at the first ``=``, no quoting, no
comments; a line without ``=`` (or starting with one) sets nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path

from agent.cli import common
from agent.store import nofollow

RUNNER_MARKERS = ("run.sh", "config.sh")


class HookInstallError(Exception):
    """A refused install; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = common.EXIT_BAD) -> None:
        super().__init__(message)
        self.code = code


def open_folder(path: Path, *, create: bool, follow: bool = False) -> int:
    """A descriptor on the folder ``path`` (created with its parents when ``create``),
    refusing a link in its last component unless ``follow``."""
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755)
    try:
        nofollow = 0 if follow else os.O_NOFOLLOW
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | nofollow | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise HookInstallError(
                f"{path} is a symbolic link; give a real folder (--hook-dir)"
            ) from None
        raise HookInstallError(f"cannot open the folder {path}: {exc.strerror}") from None


def read_at(folder: int, name: str, where: Path) -> tuple[bytes, os.stat_result] | None:
    """The bytes and status of the regular file ``name`` in ``folder`` (the folder
    ``where``, for messages), or None when it is absent."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            target = os.readlink(name, dir_fd=folder)
            raise HookInstallError(
                f"{where / name} is a symbolic link (to {target}); runner-agent does not write "
                "through links: edit the file it points at, or replace the link with a file"
            ) from None
        raise HookInstallError(f"cannot read {where / name}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise HookInstallError(f"{where / name} is not a regular file; move it away")
        return handle.read(), info


def write_at(
    folder: int, name: str, data: bytes, mode: int, owner: tuple[int, int] | None = None
) -> None:
    """Write ``name`` in ``folder`` atomically: a new file, renamed over the old name (a
    link there is replaced, not followed); the store's own writer does it."""
    nofollow.write_atomic_at(folder, name, data, mode=mode, owner=owner)


def _key(line: str) -> str | None:
    """The variable a ``.env`` line sets, as the runner reads it (split at the first
    ``=``; a line without one, or starting with one, sets nothing)."""
    index = line.find("=")
    return line[:index] if index > 0 else None


def env_values(text: str) -> dict[str, str]:
    """What the runner would set from ``text`` (the last line for a key wins)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key = _key(line)
        if key is not None:
            found[key] = line[len(key) + 1 :]
    return found


def edit_env(text: str, wanted: Mapping[str, str | None]) -> str:
    """``text`` with each key of ``wanted`` set to its value (None: removed), every other
    line kept as it is; a key set twice keeps its first place."""
    out: list[str] = []
    placed: set[str] = set()
    for line in text.splitlines(keepends=True):
        key = _key(line.rstrip("\r\n"))
        if key is None or key not in wanted:
            out.append(line)
            continue
        value = wanted[key]
        if value is not None and key not in placed:
            out.append(f"{key}={value}\n")
        placed.add(key)
    missing = [k for k, v in wanted.items() if v is not None and k not in placed]
    if missing and out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    out.extend(f"{key}={wanted[key]}\n" for key in missing)
    return "".join(out)


def env_diff(old: str, new: str) -> list[str]:
    """One ``- KEY=old`` / ``+ KEY=new`` line per variable that changed."""
    before, after = env_values(old), env_values(new)
    lines = [f"  - {k}={v}" for k, v in before.items() if after.get(k) != v]
    lines += [f"  + {k}={v}" for k, v in after.items() if before.get(k) != v]
    return lines


def runner_folder(path: Path) -> int:
    """A descriptor on the runner folder ``path``; exit 2 when it holds neither marker."""
    try:
        folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise HookInstallError(
            f"--runner-dir {path}: {exc.strerror}; give the runner's folder", common.EXIT_USAGE
        ) from None
    for marker in RUNNER_MARKERS:
        try:
            if stat.S_ISREG(os.stat(marker, dir_fd=folder, follow_symlinks=False).st_mode):
                return folder
        except FileNotFoundError:
            continue
    os.close(folder)
    raise HookInstallError(
        f"{path} is not a runner folder: it has neither run.sh nor config.sh; give "
        "--runner-dir the folder the runner was unpacked in (e.g. /home/runner/actions-runner)",
        common.EXIT_USAGE,
    )


def user_may(path: Path, uid: int, bits: int) -> bool | None:
    """Whether user ``uid`` has ``bits`` (4 read, 2 write) on ``path``; None if unknown."""
    try:
        info = path.stat()
        user = pwd.getpwuid(uid)
        groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    except (OSError, KeyError):
        return None
    if uid == 0:
        return True
    if info.st_uid == uid:
        shift = 6
    elif info.st_gid in groups:
        shift = 3
    else:
        shift = 0
    return (info.st_mode >> shift) & bits == bits


def read_env(folder: int, where: Path) -> tuple[str, os.stat_result | None]:
    """The text of ``.env`` in ``folder`` (empty when absent) and its status. Bytes that
    are not UTF-8 survive a rewrite unchanged."""
    found = read_at(folder, ".env", where)
    if found is None:
        return "", None
    return found[0].decode("utf-8", "surrogateescape"), found[1]
