"""The replay backend answers as the H200 did: its captured values, the load trace's
trajectory, and each knob (GPU count, NotSupported, MIG, a lost GPU, XID and ECC events)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from agent.gpu import backend, replay
from agent.gpu.backend import Field


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def started(clock: Clock | None = None, **knobs: object) -> replay.Replay:
    fake = replay.Replay(replay.Knobs(**knobs), clock=clock or Clock())  # type: ignore[arg-type]
    fake.init()
    return fake


def test_the_system_and_devices_are_the_captures() -> None:
    fake = replay.Replay(replay.Knobs(gpus=8))
    system = fake.init()
    assert (system.driver_version, system.cuda_driver_version) == ("580.159.04", 13000)
    assert system.cuda == (13, 0)
    devices = fake.devices()
    assert [d.index for d in devices] == list(range(8))
    assert len({d.uuid for d in devices}) == len({d.pci_bus_id for d in devices}) == 8
    assert all(d.name == "NVIDIA H200" and d.uuid.startswith("GPU-") for d in devices)
    memory = fake.read(0, Field.MEMORY)
    assert memory == backend.Memory(used=644939776, total=150754820096)


def test_the_load_trace_replays_idle_then_load() -> None:
    clock = Clock()
    fake = started(clock)
    idle = fake.read(0, Field.UTILIZATION)
    assert isinstance(idle, backend.Utilization)
    assert idle.gpu == 0
    assert fake.read(0, Field.POWER) < 130  # type: ignore[operator]
    clock.now += 15  # in the middle of the matmul loop
    busy = fake.read(0, Field.UTILIZATION)
    assert isinstance(busy, backend.Utilization)
    assert busy.gpu >= 0.98
    power = fake.read(0, Field.POWER)
    assert isinstance(power, float)
    assert 660 < power < 710
    assert fake.read(0, Field.SM_CLOCK) > 1_400_000_000  # type: ignore[operator]
    procs = fake.read(0, Field.PROCESSES)
    assert isinstance(procs, tuple)
    assert len(procs) == 1


def test_the_energy_counter_rises_across_loops_of_the_trace() -> None:
    clock = Clock()
    fake = replay.Replay(replay.Knobs(slow_costs=False), clock=clock)
    fake.init()
    seen = []
    for _ in range(200):  # ~3 loops of the ~30 s trace
        seen.append(fake.read(0, Field.ENERGY))
        clock.now += 0.5
    assert all(b >= a for a, b in itertools.pairwise(seen)), seen
    assert seen[-1] > seen[0] + 30_000  # joules: ~0.7 J/ms under load


def test_slow_reads_cost_their_real_time_and_fast_reads_do_not() -> None:
    fake = started()
    start = time.perf_counter()
    fake.read(0, Field.PCIE_TX)
    assert time.perf_counter() - start >= 0.02
    start = time.perf_counter()
    for _ in range(100):
        fake.read(0, Field.TEMPERATURE)
    assert time.perf_counter() - start < 0.05


def test_not_supported_mig_and_lost() -> None:
    clock = Clock()
    fake = started(clock, gpus=4, not_supported=frozenset({Field.ENCODER}), mig=frozenset({1}),
                   lost={2: 5.0}, slow_costs=False)  # fmt: skip
    with pytest.raises(backend.NotSupported):
        fake.read(0, Field.ENCODER)
    with pytest.raises(backend.NotSupported):
        fake.read(1, Field.UTILIZATION)  # as on a real MIG device
    assert fake.devices()[1].mig is True
    assert isinstance(fake.read(1, Field.MEMORY), backend.Memory)
    assert isinstance(fake.read(2, Field.MEMORY), backend.Memory)
    clock.now += 5
    with pytest.raises(backend.GpuLost):
        fake.read(2, Field.MEMORY)
    assert isinstance(fake.read(3, Field.MEMORY), backend.Memory)


def test_events_arrive_at_their_time_on_watched_devices_only() -> None:
    clock = Clock()
    fake = started(clock, gpus=2, xids=((1.0, 0, 13), (2.0, 1, 79)), lost={1: 3.0})
    fake.watch([0])
    assert fake.wait(10) is None  # nothing due yet: a clean timeout
    clock.now += 2.5
    event = fake.wait(10)
    assert event is not None
    assert (event.index, event.kind, event.xid) == (0, "xid", 13)
    assert fake.wait(10) is None  # GPU 1's XID 79 is not watched
    fake.inject(0, 48)
    event = fake.wait(10)
    assert event is not None
    assert event.xid == 48


def test_a_waiter_wakes_for_an_injected_event() -> None:
    fake = started(gpus=1)
    fake.watch([0])
    got: list[backend.Event | None] = []
    waiter = threading.Thread(target=lambda: got.append(fake.wait(5000)))
    waiter.start()
    time.sleep(0.05)
    fake.inject(0, 79)
    waiter.join(timeout=2)
    assert got
    assert got[0] is not None
    assert got[0].xid == 79


def test_events_not_supported_and_bad_knobs() -> None:
    fake = started(events=False)
    with pytest.raises(backend.NotSupported):
        fake.watch([0])
    with pytest.raises(ValueError, match="gpus 17: expected 1 to 16"):
        replay.Knobs(gpus=17)
    with pytest.raises(ValueError, match="GPU index 4: expected 0 to 1"):
        replay.Knobs(gpus=2, mig=frozenset({4}))
    with pytest.raises(backend.CallFailed, match="not initialised"):
        replay.Replay(replay.Knobs()).read(0, Field.MEMORY)
