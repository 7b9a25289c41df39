"""The GPU engine as the daemon sees it: the backend ``gpu.backend`` names, its
collector, and its families on the agent's registry.

Policy: ``off`` builds nothing but the backend info series; ``auto`` and ``nvml`` build
the real backend (``auto`` takes "no GPU support" as the normal case, ``nvml`` warns);
``fake`` builds the replay with ``gpu.fake``'s knobs. The backend is chosen at start
(``gpu.backend`` and ``gpu.fake`` need a restart); the deadline and interval are read at
each use, so a reload changes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from agent.config import gpu as gpu_config
from agent.gpu import backend, collector, metrics, nvml, replay

logger = logging.getLogger(__name__)


def make_backend(settings: gpu_config.GpuSettings) -> backend.Backend | None:
    """The backend ``settings`` name, or ``None`` for ``off``."""
    if settings.backend == "off":
        return None
    if settings.backend == "fake":
        fake = settings.fake
        knobs = replay.Knobs(
            gpus=fake.gpus,
            not_supported=frozenset(backend.Field(name) for name in fake.not_supported),
            mig=frozenset(fake.mig),
            lost={e.gpu: e.at_seconds for e in fake.lost},
            xids=tuple((e.at_seconds, e.gpu, e.xid) for e in fake.xids),
            ecc=tuple((e.at_seconds, e.gpu, e.errors) for e in fake.ecc),
            trace=fake.trace,
            offset=fake.offset_seconds,
            events=fake.events,
        )
        return replay.Replay(knobs)
    return nvml.Nvml()


class Gpu:
    """The engine: owns the collector; the daemon starts, runs and closes it."""

    def __init__(
        self,
        settings: Callable[[], gpu_config.GpuSettings],
        registry: CollectorRegistry,
        *,
        source: backend.Backend | None = None,
    ) -> None:
        self._settings = settings
        chosen = settings()
        self.source = source if source is not None else make_backend(chosen)
        self.collector: collector.Collector | None = None
        if self.source is not None:
            self.collector = collector.Collector(
                self.source,
                deadline=lambda: settings().scrape_deadline_seconds,
                slow_interval=lambda: settings().slow_interval_seconds,
            )
        self._explicit = chosen.backend == "nvml"
        registry.register(metrics.GpuMetrics(self.snapshot))

    def snapshot(self) -> collector.Snapshot | None:
        return self.collector.snapshot() if self.collector is not None else None

    async def start(self) -> None:
        if self.collector is None:
            logger.info("GPU metrics are off (gpu.backend: off)")
            return
        await self.collector.start()
        if self.collector.state == "unavailable" and self._explicit:
            logger.warning(
                "gpu.backend is nvml but NVML cannot be loaded here: install the NVIDIA "
                "driver (and nvidia-ml-py), or set gpu.backend: auto"
            )

    async def run(self) -> None:
        """The background sampling (a guarded task, after :meth:`start`)."""
        if self.collector is not None and self.collector.state == "ready":
            await self.collector.run_slow()

    @property
    def running(self) -> bool:
        return self.collector is not None and self.collector.state == "ready"

    async def refresh(self) -> None:
        """Before a scrape renders: the fast reads, within the deadline."""
        if self.collector is not None:
            await self.collector.refresh()

    async def close(self) -> None:
        if self.collector is not None:
            await self.collector.close()
