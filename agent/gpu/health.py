"""GPU health, scoped to this runner's GPUs, and verdicts that never flap back.

Policy:
- **scope.** A sidecar often sees every GPU of the node; health counts only the GPUs
  this runner uses: ``gpu.devices`` when set; else those the runner's latest job reported
  (its ``NVIDIA_VISIBLE_DEVICES``); else the agent's own ``NVIDIA_VISIBLE_DEVICES`` when it
  is a list; else every GPU. Other GPUs are watched and reported, and never make this
  runner unhealthy;
- **what is fatal.** An XID event, unless it is one of ``gpu.application_xids`` (13, 31,
  43, 45, 68, 109 by default: the job's own faults); a double-bit ECC event; a GPU that
  answers GpuIsLost; a GPU gone from the device list; uncorrectable ECC errors grown by
  more than ``gpu.ecc_threshold`` since the GPU was first seen;
- **no flapping.** A verdict stays until an admin clears it (:meth:`Health.clear`). It is
  kept per GPU UUID in a pod-local state file, so a liveness restart of the agent does
  not forget an XID 79;
- **the watcher** is a thread of its own that waits on NVML events a second at a time. A
  driver or sandbox that cannot deliver events (NotSupported) leaves health to what the
  collector sees (lost GPUs, the device list, ECC counters), and says so. A watcher that
  fails makes health ``unknown``, never ``healthy``;
- every change is reported through ``on_change(ok, message)`` (the daemon's readiness
  condition ``gpu``) on the event loop; with ``gpu.drain_runner`` (host mode) a verdict
  on a GPU in scope also drains the runner (:mod:`agent.gpu.drain`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.gpu import backend, collector, drain, verdicts
from agent.gpu.backend import Field
from agent.gpu.verdicts import EVERY, Verdict

logger = logging.getLogger(__name__)

WAIT_MS = 1000
"""One event wait; the watcher checks for its stop between waits."""
MAX_RUNNERS = 64


@dataclass(frozen=True)
class Status:
    """What readiness, the job hook and ``runner-agent gpu`` are told."""

    state: str
    """``healthy``, ``unhealthy``, ``unknown`` (the watcher failed or has not started)
    or ``off`` (no GPU here)."""
    verdicts: tuple[Verdict, ...]
    """Every verdict, scoped GPUs' and others'."""
    scope: tuple[str, ...]
    """UUIDs health counts."""
    events: str
    """``watching``, ``unsupported`` (no events here: polled only), ``failed``, ``off``."""
    message: str

    @property
    def ok(self) -> bool:
        return self.state in ("healthy", "off")


def parse_devices(devices: Iterable[str], known: tuple[backend.Device, ...]) -> set[str] | None:
    """The UUIDs that ``devices`` (indexes, GPU UUIDs, MIG devices) name among ``known``;
    ``None`` when one cannot be placed (then every GPU counts: safer than none)."""
    by_index = {str(d.index): d.uuid for d in known}
    uuids = {d.uuid for d in known}
    found: set[str] = set()
    for item in devices:
        if item in by_index:
            found.add(by_index[item])
        elif item in uuids:
            found.add(item)
        elif item.split(":")[0] in by_index and ":" in item:  # GPU:MIG indices
            found.add(by_index[item.split(":")[0]])
        elif item.startswith("MIG-GPU-") and item[4:].split("/")[0] in uuids:
            found.add(item[4:].split("/")[0])
        else:
            return None
    return found


def _logged(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.error("a GPU health chore failed: %s", done.exception())


class Health:
    """This runner's GPU health (see the module)."""

    def __init__(
        self,
        gpus: collector.Collector,
        *,
        devices: Callable[[], list[str]],
        application_xids: Callable[[], list[int]],
        ecc_threshold: Callable[[], int],
        state_file: Path | None,
        on_change: Callable[[bool, str], None],
        environ: dict[str, str] | None = None,
        drain_runner: Callable[[], bool] = lambda: False,
        drain_process: Callable[[], str] = lambda: drain.NAME,
    ) -> None:
        self.gpus = gpus
        self._devices = devices
        self._application = application_xids
        self._ecc_threshold = ecc_threshold
        self.state_file = state_file
        self._on_change = on_change
        self._drain_runner = drain_runner
        self._drain_process = drain_process
        env = os.environ if environ is None else environ
        self._own_visible = [d for d in env.get("NVIDIA_VISIBLE_DEVICES", "").split(",") if d]
        # The GPUs each runner's latest job saw (None: every GPU), by runner name.
        self._runners: collections.OrderedDict[str, list[str] | None] = collections.OrderedDict()
        self.verdicts: dict[str, Verdict] = {}
        self._saves = 0
        self._save_lock = threading.Lock()
        self._saving: asyncio.Future[None] | None = None
        self.xids: collections.Counter[tuple[int, int]] = collections.Counter()
        self.events = "off"
        self._ecc_base: dict[str, int] = {}
        self._seen: dict[str, backend.Device] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last: tuple[bool, str] | None = None
        self.version = 0
        """+1 on every change a scrape shows (a verdict, an XID, the watcher's state)."""

    # -- state -------------------------------------------------------------------------

    async def load(self) -> None:
        """The verdicts kept from before a restart (read in a thread)."""
        if self.state_file is not None:
            self.verdicts = await asyncio.to_thread(verdicts.load, self.state_file)

    def _save(self) -> None:
        """Keep the verdicts, in a thread: the newest save wins, none runs on the loop."""
        if self.state_file is None:
            return
        self._saves += 1
        number, path, kept = self._saves, self.state_file, list(self.verdicts.values())

        def write() -> None:
            with self._save_lock:
                if number == self._saves:  # a later save has the later verdicts
                    verdicts.save(path, kept)

        done = asyncio.get_running_loop().run_in_executor(None, write)
        done.add_done_callback(_logged)
        self._saving = done

    # -- scope -------------------------------------------------------------------------

    def job_devices(self, runner: str, kind: str | None, devices: Iterable[str]) -> None:
        """What a runner's job, now open, sees (its NVIDIA_VISIBLE_DEVICES, as parsed);
        ``kind`` None (not reported) changes nothing."""
        if kind is None:
            return
        seen: list[str] | None = list(devices) if kind == "list" else None
        if kind in ("none", "void"):
            seen = []
        self._runners[runner] = seen
        self._runners.move_to_end(runner)
        while len(self._runners) > MAX_RUNNERS:
            self._runners.popitem(last=False)
        self._report()

    def scope(self, devices: list[str] | None = None) -> set[str]:
        """The UUIDs health counts: ``devices`` (a job's own list) with ``gpu.devices``;
        else ``gpu.devices``; else what the runners' jobs saw; else the agent's own
        NVIDIA_VISIBLE_DEVICES; else every GPU."""
        known = self.gpus.devices
        every = {d.uuid for d in known}
        configured = self._devices()

        def place(items: list[str]) -> set[str]:
            found = parse_devices([i.strip() for i in items], known)
            return every if found is None else found

        if devices is not None:
            return place(devices) | (place(configured) if configured else set())
        if configured:
            return place(configured)
        if self._runners:
            lists = list(self._runners.values())
            return (
                every
                if any(x is None for x in lists)
                else place([d for x in lists for d in x or []])
            )
        if self._own_visible:
            return place(self._own_visible)
        return every

    # -- verdicts ----------------------------------------------------------------------

    def _fatal(self, device: backend.Device | None, index: int, reason: str, at: float) -> None:
        uuid = device.uuid if device is not None else f"index-{index}"
        if uuid in self.verdicts or len(self.verdicts) >= verdicts.MAX_VERDICTS:
            return
        verdict = Verdict(uuid, index, reason, at)
        self.verdicts[uuid] = verdict
        logger.error("GPU unhealthy: %s", verdict.describe(), extra={"uuid": uuid})
        self._save()
        self._report()
        if self._drain_runner() and uuid in self.scope():
            # /proc is read in a thread; nothing waits for it.
            done = asyncio.get_running_loop().run_in_executor(
                None, drain.drain, verdict.describe(), self._drain_process()
            )
            done.add_done_callback(_logged)

    def _device(self, index: int) -> backend.Device | None:
        return next((d for d in self.gpus.devices if d.index == index), None)

    def on_event(self, event: backend.Event) -> None:
        """An NVML event (on the loop)."""
        device = self._device(event.index)
        if event.kind == "ecc":
            self._fatal(device, event.index, "double-bit ECC error", event.at)
            return
        self.xids[(event.index, event.xid)] += 1
        self.version += 1
        if event.xid in self._application():
            logger.warning(
                "GPU %d: XID %d (an application error: the job's own, not the GPU's)",
                event.index,
                event.xid,
            )
            return
        self._fatal(device, event.index, f"XID {event.xid}", event.at)

    def observe(self, snap: collector.Snapshot) -> None:
        """After a sweep: lost GPUs, GPUs gone from the list, uncorrectable ECC growth;
        and readiness again (a reload may have moved the scope)."""
        self._report_if_changed()
        now = time.time()
        listed = {d.uuid: d for d in snap.devices if d.error is None}
        for uuid, gone in self._seen.items():
            if uuid not in listed:
                self._fatal(gone, gone.index, "gone from the device list", now)
        self._seen.update(listed)
        for readings in (snap.fast, snap.slow):
            for index, read in readings.items():
                device = self._device(index)
                if read.lost:
                    self._fatal(device, index, "lost (GpuIsLost: off the bus)", now)
                ecc = read.values.get(Field.ECC_AGGREGATE)
                if device is not None and isinstance(ecc, backend.Ecc):
                    base = self._ecc_base.setdefault(device.uuid, ecc.uncorrected)
                    grown = ecc.uncorrected - base
                    if grown > self._ecc_threshold():
                        self._fatal(device, index, f"{grown} new uncorrectable ECC errors", now)

    def clear(self, uuid: str | None = None) -> list[Verdict]:
        """Drop the verdict of ``uuid`` (every verdict when ``None``); what was dropped."""
        if uuid is None:
            dropped = list(self.verdicts.values())
            self.verdicts.clear()
        else:
            dropped = [self.verdicts.pop(uuid)] if uuid in self.verdicts else []
        if dropped:
            for verdict in dropped:
                logger.warning("GPU verdict cleared by an admin: %s", verdict.describe())
                self._ecc_base.pop(verdict.uuid, None)  # counted again from now
            self._save()
            self._report()
        return dropped

    def status(self, devices: list[str] | None = None) -> Status:
        """Health for readiness (``devices``: a job's own GPUs, for its start)."""
        kept = tuple(self.verdicts.values())
        if self.gpus.state != "ready":
            # Kept verdicts count whatever NVML does now: a GPU that broke NVML's start
            # is no healthier for it.
            if kept:
                message = "; ".join(v.describe() for v in kept)
                return Status("unhealthy", kept, (), self.events, message)
            if self.gpus.state in ("failed", "starting"):
                message = f"GPU health unknown: the GPU backend is {self.gpus.state}"
                return Status("unknown", kept, (), "off", message)
            return Status("off", (), (), "off", "no GPU here: " + self.gpus.state)
        scope = self.scope(devices)
        verdicts = kept
        counted = [v for v in verdicts if v.uuid in scope or v.uuid == EVERY]
        if counted:
            message = "; ".join(v.describe() for v in counted)
            return Status("unhealthy", verdicts, tuple(sorted(scope)), self.events, message)
        if self.events == "failed" or self.events == "starting":
            message = f"GPU health unknown: the XID event watcher is {self.events}"
            return Status("unknown", verdicts, tuple(sorted(scope)), self.events, message)
        note = (
            " (no XID events on this machine: polled only)" if self.events == "unsupported" else ""
        )
        message = f"{len(scope)} GPU(s) healthy{note}"
        return Status("healthy", verdicts, tuple(sorted(scope)), self.events, message)

    def _report(self) -> None:
        self.version += 1
        self._report_if_changed()

    def _report_if_changed(self) -> None:
        status = self.status()
        now = (status.ok, status.message)
        if now != self._last:
            self._last = now
            self.version += 1
            self._on_change(*now)

    # -- the watcher -------------------------------------------------------------------

    async def start(self) -> None:
        """Register events (in a thread) and start the watcher thread."""
        if self.gpus.state != "ready":
            self._report()  # no GPU here (ok), or kept verdicts, or a failed backend
            return
        self._loop = asyncio.get_running_loop()
        self.events = "starting"
        indexes = [d.index for d in self.gpus.devices if d.error is None]
        self._seen = {d.uuid: d for d in self.gpus.devices if d.error is None}
        try:
            await asyncio.to_thread(self.gpus.source.watch, indexes)
        except backend.NotSupported as exc:
            self.events = "unsupported"
            logger.warning(
                "XID events cannot be watched here (%s): GPU health sees lost GPUs, the "
                "device list and ECC counters only",
                exc,
            )
            self._report()
            return
        except backend.GpuError as exc:
            self.events = "failed"
            logger.error("the GPU event watcher failed to start: %s", exc)
            self._report()
            return
        self.events = "watching"
        self._thread = threading.Thread(target=self._watch, name="gpu-events", daemon=True)
        self._thread.start()
        self._report()

    def _watch(self) -> None:
        assert self._loop is not None
        loop = self._loop
        failures = 0
        while not self._stop.is_set():
            try:
                event = self.gpus.source.wait(WAIT_MS)
            except backend.NotSupported as exc:
                # A sandboxed kernel may register events and still not deliver them.
                logger.warning("XID events cannot be waited for here (%s): polled only", exc)
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._events_unsupported)
                return
            except backend.GpuLost:
                # A GPU off the bus (the collector gives it its verdict): go on watching.
                self._stop.wait(1.0)
                continue
            except backend.GpuError as exc:
                failures += 1
                if failures >= 3:
                    logger.error("the GPU event watcher failed: %s", exc)
                    with contextlib.suppress(RuntimeError):  # the loop has closed
                        loop.call_soon_threadsafe(self._watch_failed)
                    return
                self._stop.wait(1.0)
                continue
            failures = 0
            if event is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self.on_event, event)

    def _events_unsupported(self) -> None:
        self.events = "unsupported"
        self._report()

    def _watch_failed(self) -> None:
        self.events = "failed"
        self._report()

    async def flush(self) -> None:
        """Wait (a little) for the latest save: a verdict must be on disk at shutdown."""
        if self._saving is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._saving), 5)

    async def close(self) -> None:
        await self.flush()
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, (WAIT_MS / 1000) * 2)

    @property
    def watching(self) -> bool:
        """The watcher thread is still inside NVML (shutting NVML down would free what
        it waits on)."""
        return self._thread is not None and self._thread.is_alive()
