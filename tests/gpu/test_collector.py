"""The collector on the replay backend: NVML calls never on the loop's thread, shared
sweeps, stale values past the deadline, NotSupported remembered, lost GPUs, no GPU."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time

import pytest

from agent.gpu import backend, collector, replay
from agent.gpu.backend import Field


class Counting(replay.Replay):
    """The replay, counting reads by field and optionally slow on one field."""

    def __init__(self, knobs: replay.Knobs, slow: dict[Field, float] | None = None) -> None:
        super().__init__(knobs)
        self.reads: collections.Counter[Field] = collections.Counter()
        self.slow = slow or {}

    def read(self, index: int, what: Field) -> backend.Value:
        self.reads[what] += 1
        if what in self.slow:
            time.sleep(self.slow[what])
        return super().read(index, what)


def make(source: backend.Backend, deadline: float = 1.0) -> collector.Collector:
    return collector.Collector(source, deadline=lambda: deadline, slow_interval=lambda: 0.05)


async def test_no_nvml_call_ever_runs_on_the_event_loop_thread() -> None:
    source = Counting(replay.Knobs(gpus=8, slow_costs=False))
    gpus = make(source)
    await gpus.start()
    slow = asyncio.create_task(gpus.run_slow())
    for _ in range(20):
        await gpus.refresh()
    await gpus.read_now((Field.ENERGY,))
    await asyncio.sleep(0.2)  # a few slow sweeps
    slow.cancel()
    await asyncio.gather(slow, return_exceptions=True)
    await gpus.close()
    assert sum(source.threads.values()) > 8 * 20
    assert threading.get_ident() not in source.threads
    assert source.reads[Field.PCIE_TX] >= 8


async def test_concurrent_scrapes_share_one_sweep() -> None:
    source = Counting(replay.Knobs(gpus=2), slow={Field.TEMPERATURE: 0.05})
    gpus = make(source)
    await gpus.start()
    await asyncio.gather(*(gpus.refresh() for _ in range(10)))
    assert source.reads[Field.MEMORY] == 2  # one sweep of two GPUs
    await gpus.close()


async def test_a_scrape_past_the_deadline_gets_the_previous_values_marked_stale() -> None:
    source = Counting(replay.Knobs(gpus=1, trace="idle"))
    gpus = make(source, deadline=0.05)
    await gpus.start()
    await gpus.refresh()
    before = gpus.snapshot()
    assert not before.stale
    assert Field.MEMORY in before.fast[0].values
    source.slow[Field.TEMPERATURE] = 0.5  # the GPU now answers slowly
    start = time.perf_counter()
    await gpus.refresh()
    assert time.perf_counter() - start < 0.3
    late = gpus.snapshot()
    assert late.stale
    assert late.deadline_misses == 1
    assert late.fast == before.fast
    assert late.collected_at == before.collected_at
    await asyncio.sleep(0.6)  # the slow sweep lands; the next scrape is fresh
    source.slow.clear()
    await gpus.refresh()
    assert not gpus.snapshot().stale
    assert gpus.snapshot().collected_at > before.collected_at
    await gpus.close()


async def test_not_supported_is_asked_once_per_device() -> None:
    source = Counting(replay.Knobs(gpus=2, not_supported=frozenset({Field.ENCODER})))
    gpus = make(source)
    await gpus.start()
    for _ in range(5):
        await gpus.refresh()
    assert source.reads[Field.ENCODER] == 2
    assert Field.ENCODER not in gpus.snapshot().fast[0].values
    assert gpus.snapshot().errors == 0
    await gpus.close()


async def test_mig_devices_report_what_they_can() -> None:
    gpus = make(replay.Replay(replay.Knobs(gpus=2, mig=frozenset({1}))))
    await gpus.start()
    await gpus.refresh()
    snap = gpus.snapshot()
    assert snap.devices[1].mig is True
    assert Field.UTILIZATION not in snap.fast[1].values
    assert Field.MEMORY in snap.fast[1].values
    assert Field.UTILIZATION in snap.fast[0].values
    await gpus.close()


async def test_eight_gpus_one_lost_mid_run() -> None:
    source = Counting(replay.Knobs(gpus=8, lost={3: 0.3}, slow_costs=False))
    gpus = make(source)
    await gpus.start()
    await gpus.refresh()
    assert not any(r.lost for r in gpus.snapshot().fast.values())
    await asyncio.sleep(0.35)
    await gpus.refresh()
    snap = gpus.snapshot()
    assert snap.fast[3].lost
    assert not snap.fast[3].values
    assert all(Field.MEMORY in snap.fast[i].values for i in range(8) if i != 3)
    reads = source.reads[Field.MEMORY]
    await gpus.refresh()  # a lost GPU is not read again until the device list is
    assert source.reads[Field.MEMORY] == reads + 7
    assert snap.errors == 0
    await gpus.close()


class NoDriver(replay.Replay):
    def init(self) -> backend.System:
        raise backend.NoGpuSupport("NVML Shared Library Not Found")


async def test_no_gpu_support_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    gpus = make(NoDriver(replay.Knobs()))
    with caplog.at_level(logging.INFO, logger="agent.gpu"):
        await gpus.start()
        await gpus.refresh()
    assert gpus.state == "unavailable"
    lines = [r for r in caplog.records if r.name.startswith("agent.gpu")]
    assert [(r.levelname, "no GPU support" in r.getMessage()) for r in lines] == [("INFO", True)]
    await gpus.close()


async def test_a_scrape_soon_after_a_read_is_served_that_read() -> None:
    source = Counting(replay.Knobs(gpus=1))
    gpus = collector.Collector(
        source, deadline=lambda: 1.0, slow_interval=lambda: 60, interval=lambda: 0.3
    )
    await gpus.start()
    for _ in range(5):
        await gpus.refresh()
    assert source.reads[Field.MEMORY] == 1
    assert gpus.generation == 1
    await asyncio.sleep(0.35)
    await gpus.refresh()
    assert source.reads[Field.MEMORY] == 2
    await gpus.close()
