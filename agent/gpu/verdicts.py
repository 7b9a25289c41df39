"""GPU verdicts, and the pod-local file that keeps them across a restart of the agent.

Policy: the file sits beside the API socket (the pod's emptyDir), a folder job code may
be able to write. So it is read only if it is a regular file of the agent's own uid,
with one link and no group or other bits, opened without following a link and without
blocking (a FIFO planted there cannot wedge the agent), at most :data:`STATE_BYTES`; it
is written to a fresh temp file of a random name (``O_EXCL``), fsynced and renamed into
place. Anything else, or a file that does not parse, is not "no verdicts": it is the
verdict ``*`` (every GPU unhealthy until an admin clears it), because an unreadable
state must never read as healthy. Both run in threads, never on the event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_VERDICTS = 64
STATE_BYTES = 64 * 1024
EVERY = "*"
"""The verdict that counts for every GPU (the state could not be trusted)."""


@dataclass(frozen=True)
class Verdict:
    """Why a GPU is unhealthy."""

    uuid: str
    index: int
    reason: str
    at: float
    """Wall-clock time of the event."""

    def describe(self) -> str:
        try:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at))
        except (OverflowError, OSError, ValueError):
            when = "an unknown time"
        if self.uuid == EVERY:
            return f"every GPU: {self.reason} (at {when})"
        return f"gpu {self.index} ({self.uuid}) {self.reason} at {when}"


def _distrusted(path: Path, why: str) -> dict[str, Verdict]:
    logger.error(
        "GPU health state %s %s: every GPU counts as unhealthy until an admin clears it "
        "(runner-agent gpu clear, or POST /v1/gpu/health/clear)",
        path,
        why,
    )
    return {EVERY: Verdict(EVERY, -1, f"health state {why}", time.time())}


def _parse(raw: bytes) -> dict[str, Verdict]:
    data = json.loads(raw)
    items = data["verdicts"] if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("no verdicts list")
    found = {}
    for item in items[:MAX_VERDICTS]:
        uuid, index, reason, at = item["uuid"], item["index"], item["reason"], item["at"]
        if not (isinstance(uuid, str) and isinstance(index, int) and isinstance(reason, str)):
            raise ValueError("a verdict of the wrong shape")
        if not isinstance(at, (int, float)) or not math.isfinite(at) or at <= 0:
            raise ValueError(f"a verdict's time {at!r} is not a time")
        found[uuid[:80]] = Verdict(uuid[:80], index, reason[:300], float(at))
    return found


def load(path: Path) -> dict[str, Verdict]:
    """The verdicts kept at ``path`` (none when there is no file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        return _distrusted(path, f"cannot be opened ({exc.strerror or exc})")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return _distrusted(path, "is not the agent's own file")
        if info.st_nlink != 1 or info.st_mode & 0o077 or info.st_size > STATE_BYTES:
            return _distrusted(path, "is linked, shared or too big")
        raw = os.read(fd, STATE_BYTES + 1)
    except OSError as exc:
        return _distrusted(path, f"cannot be read ({exc.strerror or exc})")
    finally:
        os.close(fd)
    try:
        found = _parse(raw)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        return _distrusted(path, f"is unreadable ({exc})")
    if found:
        logger.warning(
            "GPU verdicts kept from before the restart: %s",
            "; ".join(v.describe() for v in found.values()),
        )
    return found


def save(path: Path, verdicts: list[Verdict]) -> None:
    """Keep ``verdicts`` at ``path`` (see the module); a failure is logged."""
    body = json.dumps({"verdicts": [asdict(v) for v in verdicts[:MAX_VERDICTS]]}).encode()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        logger.error("cannot keep the GPU verdicts in %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
