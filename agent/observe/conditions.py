"""Readiness conditions: named facts that must all hold for /readyz to answer 200.

Policy: any part of the agent registers a condition by name and flips it; a condition
carries a human message and when it last changed, so /readyz explains itself. Later
features register their own (installed features, services, GPU health). Changes are
mirrored into the ``runner_agent_condition`` and ``runner_agent_ready`` gauges.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from agent.observe import metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Condition:
    """The state of one readiness condition."""

    name: str
    ok: bool
    message: str
    since: float


class Conditions:
    """The registry of readiness conditions."""

    def __init__(self, m: metrics.Metrics | None = None) -> None:
        self._items: dict[str, Condition] = {}
        self._held: set[str] = set()  # conditions that have held at least once
        self._metrics = m

    def set(self, name: str, *, ok: bool, message: str) -> None:
        """Create or update condition ``name``; a change of state, or of the reason a
        failing condition gives, is logged."""
        old = self._items.get(name)
        if ok:
            self._held.add(name)
        since = old.since if old is not None and old.ok == ok else time.time()
        self._items[name] = Condition(name=name, ok=ok, message=message, since=since)
        changed = old is None or old.ok != ok
        # A failing condition's new reason is news too: "starting" then "cannot bind the
        # API socket ...: Permission denied" must reach the log, not only /readyz.
        reason_changed = old is not None and not ok and old.message != message
        if changed or reason_changed:
            # Until a condition has first held, its reasons are its start (info, but in
            # the log: "cannot bind ...: Permission denied" is how a start fails); a fall
            # from ok, or a new reason after one, is a warning.
            fell = name in self._held and not ok
            log = logger.warning if fell else logger.info
            log(
                "condition %s is %s: %s",
                name,
                "ok" if ok else "failing",
                message,
                extra={"condition": name},
            )
        if self._metrics is not None:
            self._metrics.condition.labels(name).set(1 if ok else 0)
            self._metrics.ready.set(1 if self.ready else 0)

    @property
    def ready(self) -> bool:
        """Whether every condition holds (an agent with none registered is not ready)."""
        return self.ready_without(frozenset())

    def ready_without(self, exclude: frozenset[str]) -> bool:
        """:attr:`ready`, leaving the conditions named in ``exclude`` out (a startup probe
        leaves ``gpu`` out, so a sick GPU cannot wedge the pod's start)."""
        return bool(self._items) and all(
            c.ok for c in self._items.values() if c.name not in exclude
        )

    def names(self) -> frozenset[str]:
        """The names of the registered conditions."""
        return frozenset(self._items)

    def snapshot(self) -> list[Condition]:
        """All conditions, sorted by name."""
        return [self._items[k] for k in sorted(self._items)]
