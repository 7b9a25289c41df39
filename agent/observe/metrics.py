"""The agent's own Prometheus registry and the metrics of the daemon itself.

Names follow Prometheus conventions: ``runner_agent_`` prefix, base units (seconds,
bytes), ``_total`` for counters. HTTP metrics are labelled by route template (never by
raw path, which a scanner could use to explode cardinality), method and status.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Awaitable, Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from agent import __version__

_HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """Every metric the daemon core exports, on one registry."""

    def __init__(self, *, started: float | None = None) -> None:
        # The *_created series double every counter and histogram for no use here (the
        # start time is exported once); this is process-wide, as the agent is one process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.before_scrape: list[Callable[[], Awaitable[None]]] = []
        """Awaited before /metrics renders: engines whose values are read per scrape
        (the GPU's) read them here, off the loop and within their own deadline."""
        self.blocks: list[Callable[[Callable[..., bytes], str], bytes]] = []
        """Exposition text that engines render (and cache) themselves, appended to the
        registry's: ``block(encoder, content_type)``. The GPU's hundreds of series would
        cost a scrape ~5 us each to format anew."""
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.build_info = Gauge(
            "runner_agent_build_info",
            "Always 1; the labels say which agent and Python are running.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.start_time = Gauge(
            "runner_agent_start_time_seconds",
            "Unix time the agent process started.",
            registry=r,
        )
        self.start_time.set(started if started is not None else time.time())
        self.loop_lag = Gauge(
            "runner_agent_event_loop_lag_seconds",
            "How late the last event-loop probe woke up, in seconds.",
            registry=r,
        )
        self.loop_lag_hist = Histogram(
            "runner_agent_event_loop_lag_observed_seconds",
            "Distribution of event-loop probe lateness, in seconds.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "runner_agent_http_requests",
            "HTTP requests served, by listener, route template, method and status.",
            ["listener", "route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "runner_agent_http_request_duration_seconds",
            "HTTP request handling time, by listener, route template, method and status.",
            ["listener", "route", "method", "status"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.config_generation = Gauge(
            "runner_agent_config_generation",
            "Generation of the configuration in force; +1 on each successful reload.",
            registry=r,
        )
        self.config_reloads = Counter(
            "runner_agent_config_reloads",
            "Successful configuration reloads.",
            registry=r,
        )
        self.config_reload_failures = Counter(
            "runner_agent_config_reload_failures",
            "Configuration reloads refused because the new configuration was invalid.",
            registry=r,
        )
        self.config_restart_required = Gauge(
            "runner_agent_config_restart_required",
            "1 while the configuration in the file has changes that need a restart.",
            registry=r,
        )
        self.condition = Gauge(
            "runner_agent_condition",
            "1 when the named readiness condition holds, else 0.",
            ["condition"],
            registry=r,
        )
        self.ready = Gauge(
            "runner_agent_ready",
            "1 when every readiness condition holds (what /readyz answers), else 0.",
            registry=r,
        )
