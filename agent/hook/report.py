"""What the hook prints into the job log: the user's one window onto what the agent did.

Policy:
- everything goes to stderr, one line at a time, flushed, so the lines keep their order
  in the log; control characters are shown escaped and every line starts with a word
  of ours, so no output of a package script can start a workflow command (``::...``)
  or rewrite a line;
- one line per event that matters: the plan, a feature's state changes, a download at
  most every 5 s (plus its end), its outcome; warnings and errors say so in front;
- the end is a summary table: feature, version, outcome (hit, installed, present,
  left, failed, skipped) and time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

DOWNLOAD_EVERY = 5.0


def clean(text: object) -> str:
    """``text`` with control characters escaped (a lone CR ends a line for the runner),
    and ``##[`` too: the runner acts on its old command form (``##[add-mask]``,
    ``##[stop-commands]``) anywhere in a line, not only at its start, as ``::`` is."""
    escaped = "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in str(text))
    return escaped.replace("##[", "##\\x5b")


def size(count: float) -> str:
    """Bytes in the unit that fits."""
    if count < 1024:
        return f"{count:.0f} B"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:.0f} B"


class Reporter:
    """Prints the job log's lines for one hook run."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stderr
        self.failed_shown: set[str] = set()
        self._state: dict[str, str] = {}
        self._last_download: dict[str, float] = {}
        self._versions: dict[str, str] = {}

    def say(self, text: str) -> None:
        """One line, as it is (after escaping)."""
        self.out.write(f"runner-agent: {clean(text)}\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        """A line the user should read, but the job goes on."""
        self.say(f"warning: {text}")

    def error(self, text: str) -> None:
        """Why the hook failed; what to do is in the text."""
        self.say(f"error: {text}")

    def event(self, event: Mapping[str, Any]) -> None:
        """One event of the agent's stream."""
        kind = str(event.get("event", ""))
        feature = clean(event.get("feature", ""))
        if kind == "plan":
            items = [f for f in event.get("features", []) if isinstance(f, dict)]
            for item in items:
                self._versions[str(item.get("id"))] = str(item.get("version", ""))
            listed = ", ".join(
                f"{clean(i.get('id'))} {clean(i.get('version'))} ({clean(i.get('method'))})"
                for i in items
            )
            self.say(f"plan: {listed}" if listed else "plan: nothing to install")
        elif kind == "output":
            # A progress meter redraws with CRs: only its last state is a line.
            parts = [p for p in str(event.get("line", "")).split("\r") if p.strip()]
            self.say(f"  {feature}: {clean(parts[-1] if parts else '')}")
        elif kind == "downloading":
            self._download(feature, event)
        elif kind == "waiting-for-lock":
            holder = clean(event.get("holder", "?"))
            self._change(feature, kind, f"{feature}: waiting, another agent installs it ({holder})")
        elif kind in ("extracting", "running", "checking"):
            method = clean(event.get("method", ""))
            self._change(feature, kind, f"{feature}: {kind}{' ' + method if method else ''}")
        elif kind == "done":
            seconds = float(event.get("seconds") or 0.0)
            self.say(f"{feature}: {clean(event.get('result', 'ok'))} in {seconds:.1f} s")
        elif kind == "failed":
            self.failed_shown.add(str(event.get("feature", "")))
            self.say(f"{feature}: failed: {clean(event.get('error', ''))}")
        elif kind == "skipped":
            self.say(f"{feature}: skipped (an earlier feature failed)")

    def _change(self, feature: str, state: str, line: str) -> None:
        if self._state.get(feature) != state:
            self._state[feature] = state
            self.say(line)

    def _download(self, feature: str, event: Mapping[str, Any]) -> None:
        done = int(event.get("bytes") or 0)
        total = event.get("total")
        now = time.monotonic()
        finished = isinstance(total, int) and total > 0 and done >= total
        last = self._last_download.get(feature)
        if last is not None and now - last < DOWNLOAD_EVERY and not finished:
            return
        if finished and self._state.get(feature) == "downloaded":
            return
        self._last_download[feature] = now
        self._state[feature] = "downloaded" if finished else "downloading"
        shown = f"{size(done)} of {size(total)}" if isinstance(total, int) and total else size(done)
        self.say(f"{feature}: downloading {shown}")

    def summary(
        self, features: Sequence[Mapping[str, Any]], ran: Mapping[str, tuple[str, float]]
    ) -> None:
        """The closing table; ``ran`` has the outcome and time of the steps the hook ran
        itself (``left`` became ``installed`` or ``present``)."""
        if not features:
            return
        rows = [("feature", "version", "result", "time")]
        for item in features:
            ident = str(item.get("id", "?"))
            result, seconds = ran.get(ident) or (str(item.get("result", "?")), item.get("seconds"))
            rows.append(
                (
                    clean(ident),
                    clean(item.get("version", "")),
                    clean(result),
                    f"{float(seconds):.1f} s" if isinstance(seconds, (int, float)) else "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            self.say("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
