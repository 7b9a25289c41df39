"""What a job used of its runner's GPUs: energy and busy seconds, per job.

Policy:
- a job's GPUs are the scope its start gave (:meth:`agent.gpu.health.Health.scope`); a
  job whose runner sees no GPU has no meter;
- energy is the energy counter's delta between the job's start and end, summed over its
  GPUs (read at both ends, off the loop); a GPU that could not be read at either end
  leaves energy unknown rather than low;
- busy seconds are utilisation integrated over the job, sampled every
  :data:`SAMPLE_SECONDS` while any job is open, summed over its GPUs (GPU-seconds);
- at most :data:`MAX_METERS` meters are open: a job that never ended (its runner was
  superseded) is dropped first.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

from agent.gpu import backend, collector, health
from agent.gpu.backend import Field

SAMPLE_SECONDS = 1.0
MAX_METERS = 64
READ_SECONDS = 2.0
"""The longest a job's start or end waits for its energy reading (else: unknown)."""


@dataclass(frozen=True)
class GpuUse:
    """A job's use of its GPUs."""

    gpus: int
    energy_joules: float | None
    busy_seconds: float | None
    """``None`` when no utilisation could be read (a MIG device has none)."""


@dataclass
class _Open:
    indexes: tuple[int, ...]
    energy: dict[int, float]
    busy: float = 0.0
    sampled: bool = False
    last: float = field(default_factory=time.monotonic)


def _energy(readings: dict[int, collector.Readings], indexes: tuple[int, ...]) -> dict[int, float]:
    found = {}
    for index in indexes:
        value = readings.get(index, collector.Readings()).values.get(Field.ENERGY)
        if isinstance(value, (int, float)):
            found[index] = float(value)
    return found


class Meter:
    """Open meters by job id (see the module)."""

    def __init__(self, gpus: collector.Collector, scope: health.Health) -> None:
        self.gpus = gpus
        self.scope = scope
        self._open: collections.OrderedDict[str, _Open] = collections.OrderedDict()
        self._wake = asyncio.Event()

    async def begin(self, job_id: str, kind: str | None, devices: list[str]) -> None:
        if self.gpus.state != "ready" or kind in ("none", "void"):
            return
        uuids = self.scope.scope(devices if kind == "list" else None)
        indexes = tuple(d.index for d in self.gpus.devices if d.uuid in uuids)
        if not indexes:
            return
        meter = self._open[job_id] = _Open(indexes, {})
        while len(self._open) > MAX_METERS:
            self._open.popitem(last=False)
        meter.energy = _energy(await self._read(Field.ENERGY), indexes)
        self._wake.set()

    async def end(self, job_id: str) -> GpuUse | None:
        meter = self._open.pop(job_id, None)
        if meter is None:
            return None
        self._add(meter, await self._read(Field.UTILIZATION))
        after = _energy(await self._read(Field.ENERGY), meter.indexes)
        energy: float | None = None
        if set(after) == set(meter.energy) == set(meter.indexes):
            energy = sum(max(0.0, after[i] - meter.energy[i]) for i in meter.indexes)
        busy = round(meter.busy, 3) if meter.sampled else None
        return GpuUse(len(meter.indexes), energy, busy)

    def discard(self, job_id: str) -> None:
        self._open.pop(job_id, None)

    async def _read(self, what: Field) -> dict[int, collector.Readings]:
        """``what`` of every GPU now, or nothing past :data:`READ_SECONDS`: a job's start
        and end never wait on a sick GPU."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.gpus.read_now((what,))), READ_SECONDS)
        except TimeoutError:
            return {}

    def _add(self, meter: _Open, readings: dict[int, collector.Readings]) -> None:
        now = time.monotonic()
        dt, meter.last = now - meter.last, now
        for index in meter.indexes:
            util = readings.get(index, collector.Readings()).values.get(Field.UTILIZATION)
            if isinstance(util, backend.Utilization):
                meter.busy += util.gpu * dt
                meter.sampled = True

    async def run(self) -> None:
        """Sample utilisation for the open meters, forever (a guarded task)."""
        while True:
            if not self._open:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(SAMPLE_SECONDS)
            if self._open:
                readings = await self._read(Field.UTILIZATION)
                for meter in list(self._open.values()):
                    self._add(meter, readings)
