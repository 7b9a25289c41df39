"""What the benchmarks share: quantiles, timing loops and the target column."""

from __future__ import annotations

import time
from collections.abc import Callable


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def met(good: bool) -> str:
    """The table's last column."""
    return "target met" if good else "MISSED"


def timed(func: Callable[[], object], runs: int) -> list[float]:
    """Seconds per call of ``func``, ``runs`` times."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return samples
