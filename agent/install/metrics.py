"""Metrics of installs and cache lookups, fed by the ensure coordinator's events.

Policy: labels are the feature id and the method (both from the catalog, so bounded)
and a fixed result set; never a version, a URL or a path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_INSTALL_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_WAIT_BUCKETS = (0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class InstallMetrics:
    """Install and cache-request metrics on the agent's registry."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        """Register on ``registry`` (``None``: count without exporting, as the CLI does)."""
        r = registry
        self.installs = Counter(
            "runner_agent_installs",
            "Installs the agent ran (cache hits are not installs), by feature, method and "
            "result (ok or failed).",
            ["feature", "method", "result"],
            registry=r,
        )
        self.install_duration = Histogram(
            "runner_agent_install_duration_seconds",
            "Time one install took, waiting for a lock included, in seconds.",
            ["method"],
            buckets=_INSTALL_BUCKETS,
            registry=r,
        )
        self.cache_requests = Counter(
            "runner_agent_cache_requests",
            "Entries asked for by ensure requests: hit (already complete) or miss.",
            ["result"],
            registry=r,
        )
        self.lock_wait = Histogram(
            "runner_agent_lock_wait_seconds",
            "Time an install waited for another agent's lock on the same entry, in seconds.",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.download_bytes = Counter(
            "runner_agent_download_bytes",
            "Bytes the agent downloaded for installs.",
            registry=r,
        )
        for result in ("hit", "miss"):
            self.cache_requests.labels(result)
