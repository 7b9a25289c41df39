"""The GPU engine as the daemon sees it: the backend ``gpu.backend`` names, its
collector and health, and its families, rendered once per sweep for the scrape to append
to the agent's own.

Policy: ``off`` builds nothing but the backend info series; ``auto`` and ``nvml`` build
the real backend (``auto`` takes "no GPU support" as the normal case, ``nvml`` warns);
``fake`` builds the replay with ``gpu.fake``'s knobs. The backend is chosen at start
(``gpu.backend`` and ``gpu.fake`` need a restart); the deadline and interval are read at
each use, so a reload changes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from agent.config import gpu as gpu_config
from agent.gpu import backend, collector, health, meter, metrics, nvml, replay

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
    """The engine: owns the collector and health; the daemon starts, runs and closes it.
    ``on_health(ok, message)`` is told each change of this runner's GPU health."""

    def __init__(
        self,
        settings: Callable[[], gpu_config.GpuSettings],
        *,
        state_file: Path,
        on_health: Callable[[bool, str], None],
        source: backend.Backend | None = None,
    ) -> None:
        self._settings = settings
        chosen = settings()
        self.source = source if source is not None else make_backend(chosen)
        self.collector: collector.Collector | None = None
        self.health: health.Health | None = None
        self.meter: meter.Meter | None = None
        if self.source is not None:
            gpus = self.collector = collector.Collector(
                self.source,
                deadline=lambda: settings().scrape_deadline_seconds,
                slow_interval=lambda: settings().slow_interval_seconds,
                interval=lambda: settings().collect_interval_seconds,
            )
            self.health = health.Health(
                gpus,
                devices=lambda: settings().devices,
                application_xids=lambda: settings().application_xids,
                ecc_threshold=lambda: settings().ecc_threshold,
                state_file=chosen.state_file or state_file,
                on_change=on_health,
                drain_runner=lambda: settings().drain_runner,
                drain_process=lambda: settings().drain_process,
            )
            gpus.on_sweep.append(self.health.observe)
            self.meter = meter.Meter(gpus, self.health)
        self._explicit = chosen.backend == "nvml"
        # A registry of its own, rendered once per sweep (see render), not per scrape.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(metrics.GpuMetrics(self.snapshot, self.health_status))
        self._rendered: dict[str, tuple[tuple[int, int, str, bool, int, int], bytes]] = {}

    def render(self, encoder: Callable[..., bytes], content_type: str) -> bytes:
        """The GPU families as exposition text, rendered again only when a sweep landed
        or health changed (the scrape appends it to the agent's registry's text)."""
        snap = self.snapshot()
        key = (
            self.collector.generation if self.collector is not None else -1,
            self.health.version if self.health is not None else -1,
            snap.state if snap is not None else "off",
            snap.stale if snap is not None else False,
            snap.errors if snap is not None else 0,
            snap.deadline_misses if snap is not None else 0,
        )
        kept = self._rendered.get(content_type)
        if kept is not None and kept[0] == key:
            return kept[1]
        body = encoder(self.registry)
        self._rendered[content_type] = (key, body)
        return body

    def snapshot(self) -> collector.Snapshot | None:
        return self.collector.snapshot() if self.collector is not None else None

    def health_status(self) -> tuple[health.Status, dict[tuple[int, int], int]] | None:
        if self.health is None:
            return None
        return self.health.status(), dict(self.health.xids)

    async def start(self) -> None:
        if self.collector is None or self.health is None:
            logger.info("GPU metrics are off (gpu.backend: off)")
            return
        await self.health.load()
        await self.collector.start()
        if self.collector.state == "unavailable" and self._explicit:
            logger.warning(
                "gpu.backend is nvml but NVML cannot be loaded here: install the NVIDIA "
                "driver (and nvidia-ml-py), or set gpu.backend: auto"
            )
        await self.health.start()

    async def run(self) -> None:
        """The background sampling (a guarded task, after :meth:`start`)."""
        if self.collector is not None and self.meter is not None and self.running:
            async with asyncio.TaskGroup() as group:  # one fails: both stop, and say why
                group.create_task(self.collector.run_slow())
                group.create_task(self.meter.run())

    def cuda_driver(self) -> str | None:
        """The CUDA version the driver runs, e.g. ``13.0`` (``None``: no GPU here)."""
        if self.collector is None or self.collector.system is None or not self.running:
            return None
        return "{}.{}".format(*self.collector.system.cuda)

    @property
    def running(self) -> bool:
        return self.collector is not None and self.collector.state == "ready"

    async def refresh(self) -> None:
        """Before a scrape renders: the fast reads, within the deadline."""
        if self.collector is not None:
            await self.collector.refresh()

    def refusal(self, kind: str | None, devices: list[str]) -> str | None:
        """Why a job whose runner sees ``devices`` (of ``kind``, as its hook parsed
        NVIDIA_VISIBLE_DEVICES) must not start here, or ``None``. A job that sees no GPU
        is never refused for one. Nothing changes: the job is not open yet."""
        if self.health is None or kind in ("none", "void"):
            return None
        status = self.health.status(devices if kind == "list" else None)
        return status.message if status.state == "unhealthy" else None

    async def close(self) -> None:
        if self.health is not None:
            await self.health.close()
        if self.collector is not None:
            # A watcher still inside an event wait would have its event set freed under it.
            busy = self.health is not None and self.health.watching
            await self.collector.close(shutdown=not busy)
