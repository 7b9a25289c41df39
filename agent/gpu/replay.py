"""The replay backend: GPUs that answer as a real H200 did, for tests, demos and charts
on machines without one.

Policy:
- its values come from two captures of a real H200 shipped with the package
  (``data/``): the static answers of every call, and a ~35 s trace recorded while a
  bf16 matmul loop ran (idle ~10 s while it started, ~20 s at 99 % and ~690 W, idle
  again). ``trace``
  chooses the timeline: ``replay`` loops the trace from ``offset`` seconds in, ``idle``
  holds its first sample and ``load`` holds the middle of the load;
- the slow calls cost what they cost there, as sleeps (PCIe throughput 21 ms each, total
  energy 2.9 ms, BAR1 0.16 ms): that cost is what the collector's design must absorb.
  Fast calls are not slept (a microsecond sleep costs tens and would measure the fake);
- knobs (:class:`Knobs`): 1 to 16 GPUs, each with its own UUID and bus id; fields a
  device does not support; MIG mode per device (utilisation is NotSupported there, as on
  real MIG devices); a device lost from a time on (every read raises GpuLost, with an
  XID 79 event); XID and ECC events at chosen times, or injected at run time;
- the energy counter stays monotonic across loops of the trace; times are seconds since
  :meth:`Replay.init` on the backend's clock (injectable for tests).
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from agent.gpu import backend
from agent.gpu.backend import Field

MAX_GPUS = 16
SLOW_COST = {Field.PCIE_TX: 0.021, Field.PCIE_RX: 0.021, Field.ENERGY: 0.0029, Field.BAR1: 0.00016}
"""Seconds each slow call took on the H200 (the capture's medians)."""
TRACES = ("replay", "idle", "load")


@dataclass(frozen=True)
class Knobs:
    gpus: int = 1
    not_supported: frozenset[Field] = frozenset()
    mig: frozenset[int] = frozenset()
    """Indexes of devices in MIG mode."""
    lost: dict[int, float] = field(default_factory=dict)
    """Index -> seconds after init from which the device is lost."""
    xids: tuple[tuple[float, int, int], ...] = ()
    """(seconds after init, index, xid) events."""
    ecc: tuple[tuple[float, int, int], ...] = ()
    """(seconds after init, index, uncorrected errors added) events."""
    trace: str = "replay"
    offset: float = 0.0
    """Seconds into the trace at init."""
    events: bool = True
    """False: registering for events is NotSupported (a sandboxed kernel)."""
    slow_costs: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.gpus <= MAX_GPUS:
            raise ValueError(f"gpus {self.gpus}: expected 1 to {MAX_GPUS}")
        if self.trace not in TRACES:
            raise ValueError(f"trace {self.trace!r}: expected one of {', '.join(TRACES)}")
        indexes = set(self.mig) | set(self.lost) | {e[1] for e in self.xids + self.ecc}
        bad = sorted(i for i in indexes if not 0 <= i < self.gpus)
        if bad:
            raise ValueError(f"GPU index {bad[0]}: expected 0 to {self.gpus - 1}")


def _data(name: str) -> Any:
    return json.loads(resources.files("agent.gpu").joinpath("data", name).read_text())


class _Trace:
    """The load trace as timelines, offsets in seconds from its first sample."""

    def __init__(self) -> None:
        raw = _data("h200-nvml-load-trace.json")
        t0 = raw["fast"][0]["t"]
        self.fast: list[dict[str, Any]] = raw["fast"]
        self.fast_at = [s["t"] - t0 for s in self.fast]
        self.slow = raw["slow"]
        self.slow_at = [s["t"] - t0 for s in self.slow]
        self.length = float(max(self.fast_at[-1], self.slow_at[-1]))
        marks = raw["marks"]
        self.load_middle = float((marks["load_start"] + marks["load_end"]) / 2 - t0)
        first, last = self.slow[0]["energy_mj"], self.slow[-1]["energy_mj"]
        self.energy_per_loop = float(last - first)

    def fast_sample(self, at: float) -> dict[str, Any]:
        return self.fast[max(0, bisect.bisect_right(self.fast_at, at) - 1)]

    def slow_value(self, at: float, key: str) -> float:
        i = bisect.bisect_right(self.slow_at, at)
        if i <= 0:
            return float(self.slow[0][key])
        if i >= len(self.slow):
            return float(self.slow[-1][key])
        (a, va), (b, vb) = (
            (self.slow_at[i - 1], self.slow[i - 1][key]),
            (
                self.slow_at[i],
                self.slow[i][key],
            ),
        )
        return float(va + (vb - va) * (at - a) / (b - a))


class Replay:
    """GPUs replayed from the H200 captures (see the module)."""

    name = "fake"

    def __init__(self, knobs: Knobs, clock: Callable[[], float] = time.monotonic) -> None:
        self.knobs = knobs
        self.clock = clock
        self._calls = backend.Calls()
        self.threads = self._calls.threads
        self._started: float | None = None
        self._trace: _Trace | None = None
        self._static: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._watched: set[int] = set()
        self._scheduled: list[tuple[float, int, str, int]] = []
        self._ecc_added: dict[int, list[tuple[float, int]]] = {}

    # -- lifecycle ---------------------------------------------------------------------

    def init(self) -> backend.System:
        self._calls.record()
        capture = _data("h200-nvml-capture.json")
        self._static = capture["devices"][0]["queries"]
        self._trace = _Trace()
        self._started = self.clock()
        system = capture["system"]
        scheduled = [(at, i, "xid", xid) for at, i, xid in self.knobs.xids]
        scheduled += [(at, i, "xid", 79) for i, at in self.knobs.lost.items()]
        scheduled += [(at, i, "ecc", 48) for at, i, _ in self.knobs.ecc]
        self._scheduled = sorted(scheduled)
        for at, i, count in self.knobs.ecc:
            self._ecc_added.setdefault(i, []).append((at, count))
        return backend.System(
            driver_version=system["nvmlSystemGetDriverVersion"]["value"],
            cuda_driver_version=int(system["nvmlSystemGetCudaDriverVersion_v2"]["value"]),
            nvml_version=system["nvmlSystemGetNVMLVersion"]["value"],
        )

    def shutdown(self) -> None:
        self._calls.record()
        with self._cond:
            self._watched.clear()
            self._cond.notify_all()

    def _now(self) -> float:
        if self._started is None:
            raise backend.CallFailed("NVML is not initialised (call init first)")
        return self.clock() - self._started

    # -- devices -----------------------------------------------------------------------

    def devices(self) -> list[backend.Device]:
        self._calls.record()
        self._now()
        base = self._static["nvmlDeviceGetUUID"]["value"]
        name = self._static["nvmlDeviceGetName"]["value"]
        return [
            backend.Device(
                index=i,
                uuid=f"{base[:-2]}{i:02x}",
                name=name,
                pci_bus_id=f"00000000:{0x18 + 0x10 * i:02X}:00.0",
                mig=i in self.knobs.mig,
            )
            for i in range(self.knobs.gpus)
        ]

    def inject(self, index: int, xid: int) -> None:
        """An XID on ``index`` now (tests and demos)."""
        with self._cond:
            self._scheduled.append((self._now(), index, "xid", xid))
            self._scheduled.sort()
            self._cond.notify_all()

    def _position(self, now: float) -> float:
        assert self._trace is not None
        if self.knobs.trace == "idle":
            return 0.0
        if self.knobs.trace == "load":
            return self._trace.load_middle
        return (self.knobs.offset + now) % self._trace.length

    def read(self, index: int, what: Field) -> backend.Value:
        self._calls.record()
        now = self._now()
        if not 0 <= index < self.knobs.gpus:
            raise backend.CallFailed(f"Invalid Argument: no GPU {index}")
        lost = self.knobs.lost.get(index)
        if lost is not None and now >= lost:
            raise backend.GpuLost(f"GPU {index} is lost")
        if what.slow and self.knobs.slow_costs:
            time.sleep(SLOW_COST[what])
        if what in self.knobs.not_supported:
            raise backend.NotSupported(f"{what.value}: Not Supported")
        mig = index in self.knobs.mig
        if mig and what in (Field.UTILIZATION, Field.ENCODER, Field.DECODER):
            raise backend.NotSupported(f"{what.value}: Not Supported in MIG mode")
        assert self._trace is not None
        at = self._position(now)
        sample = self._trace.fast_sample(at)
        return self._value(index, what, now, at, sample)

    def _value(
        self, index: int, what: Field, now: float, at: float, sample: dict[str, Any]
    ) -> backend.Value:
        assert self._trace is not None
        trace = self._trace
        match what:
            case Field.MEMORY:
                return backend.Memory(used=sample["mem"]["used"], total=sample["mem"]["total"])
            case Field.UTILIZATION:
                util = sample["util"]
                return backend.Utilization(gpu=util["gpu"] / 100, memory=util["memory"] / 100)
            case Field.TEMPERATURE:
                return int(sample["temp"])
            case Field.POWER:
                return float(sample["power_mw"]) / 1000
            case Field.SM_CLOCK:
                return int(sample["sm_clock"]) * 1_000_000
            case Field.MEMORY_CLOCK:
                return int(sample["mem_clock"]) * 1_000_000
            case Field.PSTATE:
                return int(sample["pstate"])
            case Field.CLOCK_EVENT_REASONS:
                return int(sample["clock_event_reasons"])
            case Field.ECC_VOLATILE | Field.ECC_AGGREGATE:
                added = sum(c for t, c in self._ecc_added.get(index, []) if now >= t)
                return backend.Ecc(corrected=0, uncorrected=added)
            case Field.REMAPPED_ROWS:
                return backend.RemappedRows(0, 0, pending=False, failed=False)
            case Field.ENCODER | Field.DECODER:
                return 0.0
            case Field.PROCESSES:
                return tuple(
                    backend.Process(pid=int(p["pid"]), used_bytes=p.get("usedGpuMemory"))
                    for p in sample["procs"]
                )
            case Field.PCIE_TX:
                return trace.slow_value(at, "pcie_tx_kbs") * 1024
            case Field.PCIE_RX:
                return trace.slow_value(at, "pcie_rx_kbs") * 1024
            case Field.ENERGY:
                if self.knobs.trace != "replay":
                    # A held sample still draws power: the counter rises at its rate.
                    held = float(sample["power_mw"])
                    return (trace.slow_value(0, "energy_mj") + now * held) / 1000
                loops = (self.knobs.offset + now) // trace.length
                joules = trace.slow_value(at, "energy_mj") + loops * trace.energy_per_loop
                return joules / 1000
            case Field.BAR1:
                bar1 = self._static["nvmlDeviceGetBAR1MemoryInfo"]["value"]
                return backend.Memory(used=bar1["bar1Used"], total=bar1["bar1Total"])
        raise backend.CallFailed(f"{what.value}: unknown field")  # pragma: no cover

    # -- events ------------------------------------------------------------------------

    def watch(self, indexes: list[int]) -> None:
        self._calls.record()
        self._now()
        if not self.knobs.events:
            raise backend.NotSupported("event sets: Not Supported")
        with self._cond:
            self._watched = set(indexes)

    def wait(self, timeout_ms: int) -> backend.Event | None:
        self._calls.record()
        seconds = max(0, timeout_ms) / 1000
        deadline = self._now() + seconds
        real_deadline = time.monotonic() + seconds  # a test's clock may stand still
        with self._cond:
            while True:
                now = self._now()
                due = [s for s in self._scheduled if s[0] <= now]
                for item in due:
                    self._scheduled.remove(item)
                    at, index, kind, xid = item
                    if index in self._watched:
                        wall = time.time() - (now - at)
                        return backend.Event(index=index, kind=kind, xid=xid, at=wall)
                if now >= deadline or time.monotonic() >= real_deadline:
                    return None
                upcoming = [s[0] for s in self._scheduled if s[1] in self._watched]
                until = min([deadline, *upcoming])
                # Real seconds: the clock may be a test's, so never wait past 50 ms at once.
                self._cond.wait(timeout=min(0.05, max(0.0, until - now)))
