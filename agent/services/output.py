"""A service's output: every line into a bounded ring buffer, some into the agent's log.

Policy: each stdout/stderr line of a child is kept in a ring buffer of the last
``output.buffer_lines`` lines (what ``GET /v1/services/{name}/logs`` serves), and
forwarded to the agent's log as a structured record tagged with the service and the
stream, through a token bucket (``lines_per_second``, ``burst``). Lines over the rate
are dropped from the log, counted, and reported in one line when forwarding resumes,
so a chatty or looping child cannot flood the log or the log collector behind it.
Overlong lines are cut and marked; bytes that are not UTF-8 are replaced, and control
characters are escaped.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

from agent.config import services as specs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Line:
    """One line of a service's output."""

    time: float
    stream: str
    text: str


class Output:
    """The ring buffer and rate-limited log forwarding of one service."""

    def __init__(self, service: str, policy: specs.OutputPolicy) -> None:
        self.service = service
        self.lines: deque[Line] = deque(maxlen=policy.buffer_lines)
        self.dropped_total = 0
        self._policy = policy
        self._tokens = float(policy.burst)
        self._refilled = time.monotonic()
        self._suppressed = 0

    def reconfigure(self, policy: specs.OutputPolicy) -> None:
        """Apply a new policy; the buffer keeps its newest lines."""
        if policy.buffer_lines != self._policy.buffer_lines:
            self.lines = deque(self.lines, maxlen=policy.buffer_lines)
        self._policy = policy
        self._tokens = min(self._tokens, float(policy.burst))

    def line(self, stream: str, raw: bytes) -> None:
        """Take one line (without its newline) from ``stream``."""
        limit = self._policy.max_line_bytes
        cut = len(raw) > limit
        text = raw[:limit].decode("utf-8", "replace").rstrip("\r")
        if not text.isprintable():
            # A carriage return or an escape sequence must not rewrite a text log line
            # on a terminal; tabs and the rest are shown escaped too.
            text = text.encode("unicode_escape").decode("ascii")
        if cut:
            text += f" [cut: {len(raw)} bytes]"
        self.lines.append(Line(time.time(), stream, text))
        now = time.monotonic()
        self._tokens = min(
            float(self._policy.burst),
            self._tokens + (now - self._refilled) * self._policy.lines_per_second,
        )
        self._refilled = now
        if self._tokens < 1.0:
            self._suppressed += 1
            self.dropped_total += 1
            return
        self._tokens -= 1.0
        self.flush()
        logger.info(text, extra={"service": self.service, "stream": stream})

    def flush(self) -> None:
        """Log how many lines the rate limit dropped since the last line logged."""
        if self._suppressed:
            logger.warning(
                "service %s: %d output line(s) not logged (over %g lines/s); "
                "GET /v1/services/%s/logs has the last %d",
                self.service,
                self._suppressed,
                self._policy.lines_per_second,
                self.service,
                self.lines.maxlen or 0,
                extra={"service": self.service, "dropped": self._suppressed},
            )
            self._suppressed = 0

    def tail(self, count: int) -> list[Line]:
        """The last ``count`` lines, oldest first."""
        if count <= 0:
            return []
        return list(self.lines)[-count:]
