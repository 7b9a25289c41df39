"""Event-loop lag: how late a short sleep wakes up.

Policy: a probe sleeps ``interval`` seconds and records how much later than that it
woke. Blocking calls on the loop show up here first; /healthz reports the last value and
the worst over the recent window. Cost: one timer per interval.
"""

from __future__ import annotations

import asyncio
import collections
import time

from agent.observe import metrics


class LoopLag:
    """Measures event-loop lag while :meth:`run` runs."""

    def __init__(self, m: metrics.Metrics, *, interval: float = 0.5, window: int = 120) -> None:
        self._metrics = m
        self.interval = interval
        self.last = 0.0
        self.last_tick = time.monotonic()
        self._recent: collections.deque[float] = collections.deque(maxlen=window)

    @property
    def worst_recent(self) -> float:
        """The largest lag over the window (one minute at the default interval)."""
        return max(self._recent, default=0.0)

    async def run(self) -> None:
        """Probe forever; cancel to stop."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - start - self.interval)
            self.last = lag
            self.last_tick = time.monotonic()
            self._recent.append(lag)
            self._metrics.loop_lag.set(lag)
            self._metrics.loop_lag_hist.observe(lag)
