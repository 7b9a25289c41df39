"""Showing ensure progress: live bars on a terminal, plain lines in a CI log.

Policy: on a TTY each feature has one line, redrawn in place at most 10 times a second
(state, a bar, bytes, rate and ETA while downloading). Anywhere else a line is printed
only when a feature's state changes, plus one per quarter of a download, so a log stays
short and reads top to bottom. Everything goes to stderr: stdout carries the result.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from agent.platform import plans as wire

_WIDTH = 24


@dataclass
class _Line:
    feature: str
    state: str = "planned"
    detail: str = ""
    bytes: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)
    quarter: int = -1


def clean(text: object) -> str:
    """``text`` with control characters shown escaped: output from package scripts must
    not move a terminal's cursor, nor start a line the Actions runner would read as a
    workflow command (a lone carriage return ends a line for it)."""
    return "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in str(text))


def _size(count: float) -> str:
    # In the unit that fits: "0.0/0.0 MiB" for a small file said nothing.
    if count < 1024:
        return f"{count:.0f} B"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    raise AssertionError("unreachable")


class View:
    """Renders the events of one ensure."""

    def __init__(self, out: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.lines: dict[str, _Line] = {}
        self.reported: set[str] = set()
        """Features whose failure was printed whole (so the end need not repeat it)."""
        self._drawn = 0
        self._last_draw = 0.0

    def event(self, event: wire.Event) -> None:
        """Take one event (the API's NDJSON objects, or the plan runner's in --local mode)."""
        if event["event"] == "plan":
            for item in event.get("features", []):
                self.lines.setdefault(item["id"], _Line(f"{item['id']} {item['version']}"))
            return
        if event["event"] == "result":
            return
        kind, ident = event["event"], event.get("feature")
        if ident is None:
            return
        line = self.lines.setdefault(ident, _Line(ident))
        if event["event"] == "output":
            self._print(f"  {clean(ident)}: {clean(event.get('line', ''))}")
            return
        before = (line.state, line.detail)
        line.state = kind
        if event["event"] == "downloading":
            line.bytes, line.total = int(event.get("bytes", 0)), event.get("total")
            if line.total:
                quarter = min(4, 4 * line.bytes // max(1, line.total))
                if not self.tty and quarter != line.quarter:
                    line.quarter = quarter
                    self._print(f"{line.feature}: downloading {self._bytes(line)}")
            line.detail = self._bytes(line)
        elif event["event"] == "waiting-for-lock":
            line.detail = f"another agent installs it ({clean(event.get('holder', '?'))})"
        elif event["event"] == "done":
            line.detail = f"{event.get('result', 'ok')} in {event.get('seconds', 0):.1f} s"
        elif event["event"] == "failed":
            line.detail = clean(event.get("error", ""))
            if not self.tty:
                self.reported.add(ident)  # printed whole just below: not again at the end
        else:
            line.detail = str(event.get("method", ""))
        if self.tty:
            self._draw(force=kind in ("done", "failed"))
        elif (line.state, line.detail) != before and kind != "downloading":
            self._print(f"{line.feature}: {line.state} {line.detail}".rstrip())

    def said(self, message: str) -> bool:
        """Whether a failure printed whole already said ``message``."""
        shown = clean(message)
        return any(shown in self.lines[i].detail for i in self.reported if i in self.lines)

    def close(self) -> None:
        """Leave the last state on screen."""
        if self.tty:
            self._draw(force=True)

    def _bytes(self, line: _Line) -> str:
        elapsed = max(1e-3, time.monotonic() - line.started)
        rate = line.bytes / elapsed
        if not line.total:
            return f"{_size(line.bytes)}, {_size(rate)}/s"
        eta = (line.total - line.bytes) / rate if rate > 0 else 0.0
        return f"{_size(line.bytes)}/{_size(line.total)}, {_size(rate)}/s, ETA {eta:.0f} s"

    def _bar(self, line: _Line) -> str:
        if line.state == "downloading" and line.total:
            filled = _WIDTH * line.bytes // max(1, line.total)
            return "[" + "#" * filled + "." * (_WIDTH - filled) + "] "
        if line.state == "done":
            return "[" + "#" * _WIDTH + "] "
        return " " * (_WIDTH + 3)

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F")  # back to the first line we drew
        for line in self.lines.values():
            text = f"{line.feature:<24} {self._bar(line)}{line.state} {line.detail}"
            self.out.write("\x1b[2K" + text[:160] + "\n")
        self._drawn = len(self.lines)
        self.out.flush()

    def _print(self, text: str) -> None:
        if self.tty and self._drawn:
            # Output scrolls above the bars: clear them, print, redraw below.
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
            self.out.write(text + "\n")
            self._draw(force=True)
            return
        self.out.write(text + "\n")
        self.out.flush()
