"""Collection: per-GPU readings taken off the event loop and served from memory.

Policy:
- every NVML call runs in one of the collector's own threads, never on the loop: the
  fast reads in ``gpu-fast`` (per scrape), the slow reads and the device list in
  ``gpu-slow`` (in the background, every ``gpu.slow_interval_seconds``). A slow sweep of
  8 GPUs takes ~350 ms of PCIe windows, so it never shares a thread with a scrape's;
- a scrape asks :meth:`Collector.refresh`, which starts a fast sweep unless one is under
  way (concurrent scrapes share it) or one landed less than ``gpu.collect_interval_seconds``
  ago (NVML averages utilisation and power over about a second: reading faster adds
  nothing), and waits at most ``gpu.scrape_deadline_seconds``.
  Past the deadline the scrape is served the previous values, marked stale; the sweep
  lands when it lands and the next scrape gets it. Never an error;
- a field a device answered NotSupported is remembered for that device and not asked
  again; a device that answered GpuIsLost is marked lost (health decides what that
  means) and its reads stop until the device list is taken again; any other failure is
  counted (``runner_agent_gpu_collect_errors_total``) and that value left out;
- no GPU support (no library, no driver) is one info line and ``state`` "unavailable",
  and everything else the agent serves goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agent.gpu import backend
from agent.gpu.backend import Field

logger = logging.getLogger(__name__)

START_SECONDS = 30.0
"""The longest NVML's start and first device list may take (a sick driver hangs)."""


@dataclass(frozen=True)
class Readings:
    """One device's values from one sweep."""

    values: Mapping[Field, backend.Value] = field(default_factory=dict)
    lost: bool = False


@dataclass(frozen=True)
class Snapshot:
    """What a scrape is served."""

    state: str
    """``starting``, ``ready``, ``unavailable`` (no GPU support), ``failed`` or ``off``."""
    backend_name: str
    system: backend.System | None
    devices: tuple[backend.Device, ...]
    fast: Mapping[int, Readings]
    slow: Mapping[int, Readings]
    collected_at: float
    """Wall-clock time the fast values were read; 0 before the first sweep."""
    stale: bool
    """The fast values are from before this scrape's deadline."""
    errors: int
    """Failed reads since start (NotSupported and lost devices are not failures)."""
    deadline_misses: int


@dataclass
class _Sweep:
    readings: dict[int, Readings]
    errors: int


class Collector:
    """Reads one backend's devices (see the module)."""

    def __init__(
        self,
        source: backend.Backend,
        *,
        deadline: Callable[[], float],
        slow_interval: Callable[[], float],
        interval: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.source = source
        self._deadline = deadline
        self._slow_interval = slow_interval
        self._interval = interval
        self.generation = 0
        """+1 each time a sweep lands: renderings keyed on it are current."""
        self.state = "starting"
        self.system: backend.System | None = None
        self.devices: tuple[backend.Device, ...] = ()
        self._fast_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gpu-fast")
        self._slow_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gpu-slow")
        self._unsupported: dict[int, set[Field]] = {}
        self._lost: set[int] = set()
        self._lost_lock = threading.Lock()  # both threads mark and clear it
        self._fast: dict[int, Readings] = {}
        self._slow: dict[int, Readings] = {}
        self._fast_at = 0.0
        self._fast_mono = -1e9  # monotonic: a clock step never freezes the values
        self._errors = 0
        self._misses = 0
        self._inflight: asyncio.Future[_Sweep] | None = None
        self._stale = False
        self.on_sweep: list[Callable[[Snapshot], None]] = []
        """Called on the loop after each sweep lands (health reads the snapshot)."""

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Initialise the backend and list its devices (in the slow thread)."""
        loop = asyncio.get_running_loop()
        try:
            self.system = await asyncio.wait_for(
                loop.run_in_executor(self._slow_pool, self.source.init), START_SECONDS
            )
            self.devices = tuple(
                await asyncio.wait_for(
                    loop.run_in_executor(self._slow_pool, self.source.devices), START_SECONDS
                )
            )
        except backend.NoGpuSupport as exc:
            self.state = "unavailable"
            logger.info("no GPU support on this machine (%s): GPU metrics are off", exc)
            return
        except (backend.GpuError, TimeoutError) as exc:
            self.state = "failed"
            why = exc if str(exc) else f"no answer in {START_SECONDS:g} s"
            logger.error("GPU backend %s failed to start: %s", self.source.name, why)
            return
        self.state = "ready"
        logger.info(
            "GPU backend %s: %d device(s), driver %s, CUDA %d.%d",
            self.source.name,
            len(self.devices),
            self.system.driver_version,
            *self.system.cuda,
            extra={"devices": [d.uuid for d in self.devices]},
        )

    async def run_slow(self) -> None:
        """Sample the slow reads and the device list forever (a guarded task)."""
        loop = asyncio.get_running_loop()
        while True:
            if self.state == "ready":
                devices, sweep = await loop.run_in_executor(self._slow_pool, self._sweep_slow)
                self._errors += sweep.errors
                self._slow = sweep.readings
                if devices is not None:
                    self.devices = tuple(devices)
                self._landing()
            await asyncio.sleep(self._slow_interval())

    async def close(self, *, shutdown: bool = True) -> None:
        """Let the threads go and shut NVML down (bounded: a hung call is left behind;
        ``shutdown`` False leaves NVML up for a thread still inside it)."""
        loop = asyncio.get_running_loop()
        if self.state == "ready" and shutdown:
            try:
                await asyncio.wait_for(
                    loop.run_in_executor(self._slow_pool, self.source.shutdown), timeout=2
                )
            except (TimeoutError, backend.GpuError) as exc:
                logger.warning("GPU backend did not shut down cleanly: %s", exc)
        self.state = "off"
        self._fast_pool.shutdown(wait=False, cancel_futures=True)
        self._slow_pool.shutdown(wait=False, cancel_futures=True)

    # -- scrapes -----------------------------------------------------------------------

    async def refresh(self) -> None:
        """Take the fast reads for a scrape, within the deadline (see the module)."""
        if self.state != "ready":
            return
        if not self._stale and time.monotonic() - self._fast_mono < self._interval():
            return  # read moments ago: NVML averages utilisation and power over ~1 s
        if self._inflight is None or self._inflight.done():
            loop = asyncio.get_running_loop()
            self._inflight = loop.run_in_executor(self._fast_pool, self._sweep_fast)
            self._inflight.add_done_callback(self._landed)
        try:
            await asyncio.wait_for(asyncio.shield(self._inflight), self._deadline())
        except TimeoutError:
            self._misses += 1
            self._stale = True
        except Exception:
            self._stale = True
        else:
            self._stale = False

    def _landed(self, done: asyncio.Future[_Sweep]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            self._errors += 1
            logger.warning("GPU collection failed: %s", error)
            return
        sweep = done.result()
        self._fast = sweep.readings
        self._errors += sweep.errors
        self._fast_at = time.time()
        self._fast_mono = time.monotonic()
        self._landing()

    def _landing(self) -> None:
        self.generation += 1
        snap = self.snapshot()
        for call in self.on_sweep:
            try:
                call(snap)
            except Exception:  # one observer's bug must not stop collection
                logger.exception("a GPU sweep observer failed")

    def snapshot(self) -> Snapshot:
        return Snapshot(
            state=self.state,
            backend_name=self.source.name,
            system=self.system,
            devices=self.devices,
            fast=self._fast,
            slow=self._slow,
            collected_at=self._fast_at,
            stale=self._stale,
            errors=self._errors,
            deadline_misses=self._misses,
        )

    async def read_now(self, fields: tuple[Field, ...]) -> dict[int, Readings]:
        """These fields of every device, read now in the slow thread (a job's start and
        end read the energy counter this way)."""
        if self.state != "ready":
            return {}
        loop = asyncio.get_running_loop()
        sweep = await loop.run_in_executor(self._slow_pool, self._sweep, fields)
        self._errors += sweep.errors
        return sweep.readings

    # -- in the threads ----------------------------------------------------------------

    def _sweep_fast(self) -> _Sweep:
        return self._sweep(backend.FAST)

    def _sweep_slow(self) -> tuple[list[backend.Device] | None, _Sweep]:
        devices: list[backend.Device] | None
        try:
            devices = self.source.devices()
        except backend.GpuError as exc:
            logger.warning("GPU device list failed: %s", exc)
            devices = None
        else:
            # A device listed again is read again: a reset GPU comes back here.
            listed = {d.index for d in devices if d.error is None}
            with self._lost_lock:
                self._lost &= listed
        return devices, self._sweep(tuple(backend.SLOW))

    def _sweep(self, fields: tuple[Field, ...]) -> _Sweep:
        readings: dict[int, Readings] = {}
        errors = 0
        for device in self.devices:
            index = device.index
            if index in self._lost:
                readings[index] = Readings(lost=True)
                continue
            skip = self._unsupported.setdefault(index, set())
            values: dict[Field, backend.Value] = {}
            lost = False
            for what in fields:
                if what in skip:
                    continue
                try:
                    values[what] = self.source.read(index, what)
                except backend.NotSupported:
                    skip.add(what)
                except backend.GpuLost:
                    with self._lost_lock:
                        self._lost.add(index)
                    lost = True
                    break
                except backend.GpuError as exc:
                    errors += 1
                    logger.debug("GPU %d %s: %s", index, what.value, exc)
            readings[index] = Readings(values=values, lost=lost)
        return _Sweep(readings, errors)
