"""Prometheus metrics of the shared tool store, built fresh on every scrape.

Policy: ``collect()`` runs on the event loop inside the /metrics handler, so it reads
only numbers already in memory: the janitor's running total (refreshed from receipts in
a thread, see :class:`agent.store.inventory.Tally`) and its counters. It never touches
the volume. Series:

- ``runner_agent_cache_bytes``: bytes of complete entries, as their receipts record, plus
  the download cache (what the budget compares against);
- ``runner_agent_cache_budget_bytes``: ``cache.size_budget`` in force;
- ``runner_agent_cache_entries``: complete entries with a receipt;
- ``runner_agent_evictions_total``: entries this agent evicted;
- ``runner_agent_janitor_runs_total{result}``: janitor passes by ``ok``, ``skipped``
  (another agent's janitor held the lock) and ``failed``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.store import janitor

RESULTS = ("ok", "skipped", "failed")


class CacheCollector(Collector):
    """Collects the store's series from the daemon's janitor (absent before it starts)."""

    def __init__(
        self, current: Callable[[], janitor.Janitor | None], *, budget: Callable[[], int]
    ) -> None:
        self._current = current
        self._budget = budget

    def collect(self) -> Iterator[Metric]:
        jan = self._current()
        yield GaugeMetricFamily(
            "runner_agent_cache_budget_bytes",
            "The store's size budget (cache.size_budget), in bytes.",
            value=float(self._budget()),
        )
        if jan is None:
            return
        totals = jan.tally.snapshot()
        yield GaugeMetricFamily(
            "runner_agent_cache_bytes",
            "Bytes of the store: complete entries, summed from their receipts (no tree "
            "walk), plus the download cache.",
            value=float(totals.bytes),
        )
        yield GaugeMetricFamily(
            "runner_agent_cache_entries",
            "Complete store entries with a receipt.",
            value=float(totals.entries),
        )
        yield CounterMetricFamily(
            "runner_agent_evictions",
            "Store entries this agent evicted (least recently used first, to a size).",
            value=float(jan.evictions),
        )
        runs = CounterMetricFamily(
            "runner_agent_janitor_runs",
            "Janitor passes by result: ok, skipped (another agent's janitor held the lock) "
            "or failed.",
            labels=["result"],
        )
        for result in RESULTS:
            runs.add_metric([result], float(jan.runs.get(result, 0)))
        yield runs

    def describe(self) -> Iterator[Metric]:
        # Describing by collecting would read a janitor that may not exist yet.
        return iter(())
