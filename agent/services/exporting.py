"""Prometheus metrics of the supervised services, built fresh on every scrape.

Policy: a custom collector reads the supervisor's state (cheap, non-blocking) instead of
mirroring it into gauges at each transition, so the series can never disagree with
``GET /v1/services``. Series, all labelled by ``service``:

- ``runner_agent_service_up``: 1 only when the service runs and its last health check
  passed (a service without a check: while its process runs);
- ``runner_agent_service_restarts_total{reason}``: restarts by ``exit``, ``unhealthy``
  (failed checks) and ``manual`` (an operator's restart or a changed spec);
- ``runner_agent_service_state{state}``: 1 for the current state, 0 for the others;
- ``runner_agent_service_health_check_seconds``: how long the last check took;
- ``runner_agent_service_last_exit_code``: the last exit code (negative: killed by that
  signal); absent until the service has exited once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.services import supervisor


class ServicesCollector(Collector):
    """Collects the service series from the supervisor in force (if any)."""

    def __init__(self, current: Callable[[], supervisor.Supervisor | None]) -> None:
        self._current = current

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "runner_agent_service_up",
            "1 when the service runs and its last health check passed, else 0.",
            labels=["service"],
        )
        restarts = CounterMetricFamily(
            "runner_agent_service_restarts",
            "Service restarts, by reason: exit, unhealthy (failed checks) or manual.",
            labels=["service", "reason"],
        )
        state = GaugeMetricFamily(
            "runner_agent_service_state",
            "1 for the state the service is in, 0 for the others.",
            labels=["service", "state"],
        )
        check = GaugeMetricFamily(
            "runner_agent_service_health_check_seconds",
            "Duration of the service's last health check, in seconds.",
            labels=["service"],
        )
        exit_code = GaugeMetricFamily(
            "runner_agent_service_last_exit_code",
            "The service's last exit code; negative when a signal killed it.",
            labels=["service"],
        )
        sup = self._current()
        if sup is not None:
            # Loaded with the supervisor, after the probes bind: the daemon registers this
            # collector before that, and importing it must not cost the startup.
            from agent.services import supervising

            for name, service in sorted(sup.services.items()):
                up.add_metric([name], 1.0 if service.up else 0.0)
                for reason in supervising.REASONS:
                    restarts.add_metric([name, reason], float(service.restarts[reason]))
                for each in supervising.STATES:
                    state.add_metric([name, each], 1.0 if service.state == each else 0.0)
                if service.last_health is not None:
                    check.add_metric([name], service.last_health.seconds)
                if service.last_exit is not None:
                    exit_code.add_metric([name], float(service.last_exit))
        yield from (up, restarts, state, check, exit_code)

    def describe(self) -> Iterator[Metric]:
        # Describing by collecting would read a supervisor that may not exist yet.
        return iter(())
