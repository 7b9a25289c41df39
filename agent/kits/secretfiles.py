"""Reading a secret from a file: a token, a key, a webhook secret.

Policy: the file is opened non-blocking (a FIFO planted there must not hang the reader),
must be a regular file, is read up to a bound, and its surrounding whitespace is
stripped (Kubernetes secrets often end in a newline). Failures raise
:class:`SecretFileError`, whose message names the file and the setting, never the
content; each caller wraps it in its own error.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class SecretFileError(Exception):
    """The secret file cannot be used; the message says why, without its content."""


def read(path: Path, setting: str, *, limit: int, single_line: bool = False) -> bytes:
    """The secret in ``path`` (configured as ``setting``), at most ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SecretFileError(f"{setting} {path} is not a regular file")
            raw = os.read(fd, limit + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise SecretFileError(
            f"cannot read {setting} {path}: {exc.strerror}; mount the secret there"
        ) from exc
    if len(raw) > limit:
        raise SecretFileError(f"{setting} {path} is over {limit} bytes")
    value = raw.strip()
    if not value:
        raise SecretFileError(f"{setting} {path} is empty")
    if single_line and not (value.isascii() and value.decode().isprintable()):
        raise SecretFileError(f"{setting} {path} holds more than one printable line")
    return value
