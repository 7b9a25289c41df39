"""The install log kept per entry at ``<root>/.runner-agent/logs/<key>.log``.

Policy: one line per step with the seconds since the install began, plus the output of
the commands the install ran (the last 64 KiB of each), so an operator can read why an
install failed on another pod without its logs. Writing the log never fails an install; it is
written as every store file is (:mod:`agent.store.nofollow`), never through a link. Every
line has the credentials of the URLs it quotes hidden (:mod:`agent.kits.urls`): the log is
read by whoever can read the store.
"""

from __future__ import annotations

import logging
import os
import time

from agent.kits import urls
from agent.store import layout, nofollow

logger = logging.getLogger(__name__)

_OUTPUT_LIMIT = 64 * 1024


class InstallLog:
    """The log of one install attempt, saved atomically when it ends."""

    def __init__(self, store: layout.Store, entry: layout.Entry) -> None:
        folder = store.meta / "logs"
        # Reached from the root without following links: a planted link at logs (or at
        # the log's name) is refused (or replaced), never written through.
        try:
            os.close(nofollow.open_dir(store.root, (layout.META, "logs"), create=True))
        except OSError as exc:
            logger.warning("cannot keep install logs in %s: %s", folder, exc.strerror)
        self.root = store.root
        self.path = folder / f"{entry.key}.log"
        self.start = time.monotonic()
        self.lines: list[str] = []

    def step(self, name: str, detail: str = "") -> None:
        """Record that step ``name`` happened now."""
        line = f"{time.monotonic() - self.start:8.3f}s {name} {urls.hide_urls(detail)}"
        self.lines.append(line.rstrip())

    def output(self, name: str, text: str) -> None:
        """Keep a command's output (its end, when long), indented under its step."""
        # Hidden before the cut: cut inside a URL, its scheme gone, nothing would match.
        text = urls.hide_urls(text)[-_OUTPUT_LIMIT:].rstrip()
        if not text:
            return
        self.lines.append(f"--- output of {name} ---")
        self.lines.extend(f"  {line}" for line in text.splitlines())
        self.lines.append(f"--- end of {name} ---")

    def last_line(self, text: str) -> str:
        """The last non-empty line of ``text``, shortened: a step's summary."""
        lines = text.strip().splitlines()
        return lines[-1][:200] if lines else ""

    def save(self) -> None:
        """Write the log; a failure is logged, never raised."""
        try:
            data = ("\n".join(self.lines) + "\n").encode()
            layout.write_atomic(self.path, data, root=self.root)
        except OSError as exc:
            logger.warning("cannot write the install log %s: %s", self.path, exc)
