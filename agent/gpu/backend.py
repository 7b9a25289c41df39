"""What every NVML backend offers (the real library, the H200 replay, none), in the
agent's types and units, and the errors callers tell apart.

Policy:
- every call is synchronous and may block (a PCIe throughput read samples a 20 ms
  window): callers run them in worker threads, never on the event loop. Each backend
  counts the threads its calls ran on (:attr:`Backend.threads`), so a test can prove it;
- values are in SI units: bytes, watts, hertz, joules, degrees Celsius, ratios 0..1;
- a field a device cannot give raises :class:`NotSupported` (callers remember it), a
  device that fell off the bus :class:`GpuLost`, anything else :class:`CallFailed`;
  no GPU support at all (no driver library, no driver loaded) is :class:`NoGpuSupport`
  from :meth:`Backend.init`: the normal case on a CPU node, not an error.
"""

from __future__ import annotations

import collections
import enum
import threading
from dataclasses import dataclass
from typing import Protocol


class GpuError(Exception):
    """An NVML call failed."""


class NoGpuSupport(GpuError):
    """This machine has no NVIDIA driver the agent can reach: GPU metrics are off."""


class NotSupported(GpuError):
    """This device does not give this field (e.g. fan speed on an H200)."""


class GpuLost(GpuError):
    """The device fell off the bus (XID 79): it answers nothing until a reset."""


class CallFailed(GpuError):
    """Any other NVML failure, with NVML's own words."""


class Field(enum.Enum):
    """A per-device reading. Fast ones cost microseconds; slow ones milliseconds."""

    MEMORY = "memory"
    UTILIZATION = "utilization"
    TEMPERATURE = "temperature"
    POWER = "power"
    SM_CLOCK = "sm_clock"
    MEMORY_CLOCK = "memory_clock"
    PSTATE = "pstate"
    CLOCK_EVENT_REASONS = "clock_event_reasons"
    ECC_VOLATILE = "ecc_volatile"
    ECC_AGGREGATE = "ecc_aggregate"
    REMAPPED_ROWS = "remapped_rows"
    ENCODER = "encoder"
    DECODER = "decoder"
    PROCESSES = "processes"
    # Slow: sampled in the background at their own interval.
    PCIE_TX = "pcie_tx"
    PCIE_RX = "pcie_rx"
    ENERGY = "energy"
    BAR1 = "bar1"

    @property
    def slow(self) -> bool:
        return self in SLOW


SLOW = frozenset({Field.PCIE_TX, Field.PCIE_RX, Field.ENERGY, Field.BAR1})
FAST = tuple(f for f in Field if f not in SLOW)


@dataclass(frozen=True)
class System:
    driver_version: str
    cuda_driver_version: int
    """NVML's form: 13000 is CUDA 13.0, 12040 is 12.4."""
    nvml_version: str

    @property
    def cuda(self) -> tuple[int, int]:
        return self.cuda_driver_version // 1000, self.cuda_driver_version % 1000 // 10


@dataclass(frozen=True)
class Device:
    """What does not change while the agent runs."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str
    mig: bool | None
    """MIG mode is on (None: the device cannot say)."""
    error: str | None = None
    """Why the device could not be reached when listed (its other fields are empty)."""


@dataclass(frozen=True)
class Memory:
    used: int
    total: int


@dataclass(frozen=True)
class Utilization:
    gpu: float
    memory: float


@dataclass(frozen=True)
class Ecc:
    corrected: int
    uncorrected: int


@dataclass(frozen=True)
class RemappedRows:
    correctable: int
    uncorrectable: int
    pending: bool
    failed: bool


@dataclass(frozen=True)
class Process:
    pid: int
    """A host PID: the driver does not know PID namespaces."""
    used_bytes: int | None


Value = int | float | Memory | Utilization | Ecc | RemappedRows | tuple[Process, ...]


@dataclass(frozen=True)
class Event:
    """What an event wait returned."""

    index: int
    kind: str
    """``xid`` or ``ecc`` (a double-bit ECC error)."""
    xid: int
    at: float
    """Wall-clock seconds."""


class Backend(Protocol):
    name: str
    """``nvml`` or ``fake``: ``runner_agent_gpu_info{backend}`` says which."""
    threads: collections.Counter[int]
    """Calls made, by the ident of the thread that made them."""

    def init(self) -> System: ...

    def shutdown(self) -> None: ...

    def devices(self) -> list[Device]:
        """Every device, in NVML's order; raises GpuError when even the count fails."""
        ...

    def read(self, index: int, field: Field) -> Value: ...

    def watch(self, indexes: list[int]) -> None:
        """Register XID and double-bit ECC events on these devices (NotSupported when the
        driver or a sandboxed kernel cannot)."""
        ...

    def wait(self, timeout_ms: int) -> Event | None:
        """The next event, or None when ``timeout_ms`` passed without one."""
        ...


class Calls:
    """Counts each call's thread; both backends record through it."""

    def __init__(self) -> None:
        self.threads: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()

    def record(self) -> None:
        with self._lock:
            self.threads[threading.get_ident()] += 1
