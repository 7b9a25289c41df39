"""The real backend: NVIDIA's NVML through nvidia-ml-py (``import pynvml``).

Policy:
- pynvml is imported and NVML initialised on :meth:`Nvml.init` only (startup pays
  nothing); no library or no driver (``LibraryNotFound``, ``DriverNotLoaded``) is
  :class:`~agent.gpu.backend.NoGpuSupport`, the normal case on a CPU node;
- NVML's errors become the backend's (NotSupported, GpuIsLost, the rest as CallFailed
  with NVML's words); values are converted to SI units here, once;
- handles are looked up once per device at :meth:`Nvml.devices`; a device that cannot
  be reached then is listed with what NVML said about it, never dropped silently (a drop
  in the device count is a health verdict, not a detail);
- temperature reads ``nvmlDeviceGetTemperatureV`` where the bindings and driver have it,
  the deprecated call otherwise; clock-event reasons fall back to the throttle reasons.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

from agent.gpu import backend
from agent.gpu.backend import Field

_NO_SUPPORT = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded", "NVMLError_NoPermission")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class Nvml:
    """NVML itself (see the module)."""

    name = "nvml"

    def __init__(self) -> None:
        self._calls = backend.Calls()
        self.threads = self._calls.threads
        self._nvml: Any = None
        self._handles: dict[int, Any] = {}
        self._events: Any = None

    def _wrap(self, exc: Exception) -> backend.GpuError:
        kind = type(exc).__name__
        if kind in ("NVMLError_NotSupported", "NVMLError_FunctionNotFound"):
            return backend.NotSupported(str(exc))  # an older driver lacks the call
        if kind == "NVMLError_GpuIsLost":
            return backend.GpuLost(str(exc))
        return backend.CallFailed(f"{kind}: {exc}")

    def _call(self, fn: str, *args: Any) -> Any:
        self._calls.record()
        if self._nvml is None:
            raise backend.CallFailed("NVML is not initialised (call init first)")
        try:
            return getattr(self._nvml, fn)(*args)
        except self._nvml.NVMLError as exc:
            raise self._wrap(exc) from exc

    def init(self) -> backend.System:
        self._calls.record()
        try:
            import pynvml
        except ImportError as exc:
            raise backend.NoGpuSupport(f"nvidia-ml-py is not installed: {exc}") from exc
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            if type(exc).__name__ in _NO_SUPPORT:
                raise backend.NoGpuSupport(f"{exc}") from exc
            raise self._wrap(exc) from exc
        self._nvml = pynvml
        try:
            cuda = self._call("nvmlSystemGetCudaDriverVersion_v2")
        except backend.GpuError:
            cuda = self._call("nvmlSystemGetCudaDriverVersion")
        return backend.System(
            driver_version=_text(self._call("nvmlSystemGetDriverVersion")),
            cuda_driver_version=int(cuda),
            nvml_version=_text(self._call("nvmlSystemGetNVMLVersion")),
        )

    def shutdown(self) -> None:
        self._calls.record()
        if self._nvml is None:
            return
        nvml, self._nvml = self._nvml, None
        try:
            if self._events is not None:
                nvml.nvmlEventSetFree(self._events)
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass  # the process is ending; NVML's own state goes with it
        self._handles.clear()
        self._events = None

    def devices(self) -> list[backend.Device]:
        found = []
        for index in range(int(self._call("nvmlDeviceGetCount"))):
            try:
                handle = self._call("nvmlDeviceGetHandleByIndex", index)
            except backend.GpuError as exc:
                found.append(backend.Device(index, "", "", "", None, error=str(exc)))
                continue
            self._handles[index] = handle
            try:
                current, _pending = self._call("nvmlDeviceGetMigMode", handle)
                mig: bool | None = bool(current)
            except backend.GpuError:
                mig = None
            found.append(
                backend.Device(
                    index=index,
                    uuid=_text(self._call("nvmlDeviceGetUUID", handle)),
                    name=_text(self._call("nvmlDeviceGetName", handle)),
                    pci_bus_id=_text(self._call("nvmlDeviceGetPciInfo", handle).busId),
                    mig=mig,
                )
            )
        return found

    def _handle(self, index: int) -> Any:
        handle = self._handles.get(index)
        if handle is None:
            handle = self._call("nvmlDeviceGetHandleByIndex", index)
            self._handles[index] = handle
        return handle

    def read(self, index: int, what: Field) -> backend.Value:
        h = self._handle(index)
        n = self._nvml
        match what:
            case Field.MEMORY:
                info = self._call("nvmlDeviceGetMemoryInfo", h)
                return backend.Memory(used=int(info.used), total=int(info.total))
            case Field.UTILIZATION:
                rates = self._call("nvmlDeviceGetUtilizationRates", h)
                return backend.Utilization(gpu=rates.gpu / 100, memory=rates.memory / 100)
            case Field.TEMPERATURE:
                if hasattr(n, "nvmlDeviceGetTemperatureV"):
                    try:
                        return int(
                            self._call("nvmlDeviceGetTemperatureV", h, n.NVML_TEMPERATURE_GPU)
                        )
                    except backend.CallFailed:
                        pass  # an older driver: the deprecated call still answers
                return int(self._call("nvmlDeviceGetTemperature", h, n.NVML_TEMPERATURE_GPU))
            case Field.POWER:
                return int(self._call("nvmlDeviceGetPowerUsage", h)) / 1000
            case Field.SM_CLOCK:
                return int(self._call("nvmlDeviceGetClockInfo", h, n.NVML_CLOCK_SM)) * 1_000_000
            case Field.MEMORY_CLOCK:
                return int(self._call("nvmlDeviceGetClockInfo", h, n.NVML_CLOCK_MEM)) * 1_000_000
            case Field.PSTATE:
                return int(self._call("nvmlDeviceGetPerformanceState", h))
            case Field.CLOCK_EVENT_REASONS:
                if hasattr(n, "nvmlDeviceGetCurrentClocksEventReasons"):
                    return int(self._call("nvmlDeviceGetCurrentClocksEventReasons", h))
                return int(self._call("nvmlDeviceGetCurrentClocksThrottleReasons", h))
            case Field.ECC_VOLATILE | Field.ECC_AGGREGATE:
                counter = (
                    n.NVML_VOLATILE_ECC if what is Field.ECC_VOLATILE else n.NVML_AGGREGATE_ECC
                )
                fn = "nvmlDeviceGetTotalEccErrors"
                return backend.Ecc(
                    corrected=int(self._call(fn, h, n.NVML_MEMORY_ERROR_TYPE_CORRECTED, counter)),
                    uncorrected=int(
                        self._call(fn, h, n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, counter)
                    ),
                )
            case Field.REMAPPED_ROWS:
                corr, unc, pending, failed = self._call("nvmlDeviceGetRemappedRows", h)
                return backend.RemappedRows(int(corr), int(unc), bool(pending), bool(failed))
            case Field.ENCODER:
                return int(self._call("nvmlDeviceGetEncoderUtilization", h)[0]) / 100
            case Field.DECODER:
                return int(self._call("nvmlDeviceGetDecoderUtilization", h)[0]) / 100
            case Field.PROCESSES:
                procs = self._call("nvmlDeviceGetComputeRunningProcesses", h)
                return tuple(
                    backend.Process(int(p.pid), _memory(getattr(p, "usedGpuMemory", None)))
                    for p in procs
                )
            case Field.PCIE_TX | Field.PCIE_RX:
                counter = (
                    n.NVML_PCIE_UTIL_TX_BYTES
                    if what is Field.PCIE_TX
                    else n.NVML_PCIE_UTIL_RX_BYTES
                )
                return int(self._call("nvmlDeviceGetPcieThroughput", h, counter)) * 1024
            case Field.ENERGY:
                return int(self._call("nvmlDeviceGetTotalEnergyConsumption", h)) / 1000
            case Field.BAR1:
                bar1 = self._call("nvmlDeviceGetBAR1MemoryInfo", h)
                return backend.Memory(used=int(bar1.bar1Used), total=int(bar1.bar1Total))
        raise backend.CallFailed(f"{what.value}: unknown field")  # pragma: no cover

    def watch(self, indexes: list[int]) -> None:
        n = self._nvml
        if self._events is None:
            self._events = self._call("nvmlEventSetCreate")
        wanted = n.nvmlEventTypeXidCriticalError | n.nvmlEventTypeDoubleBitEccError
        watched = 0
        for index in indexes:
            # Per device, what it supports: a board without ECC events would refuse the
            # pair, and must still get its XIDs watched.
            try:
                handle = self._handle(index)
                kinds = int(self._call("nvmlDeviceGetSupportedEventTypes", handle)) & wanted
                if kinds & n.nvmlEventTypeXidCriticalError:
                    self._call("nvmlDeviceRegisterEvents", handle, kinds, self._events)
                    watched += 1
            except (backend.NotSupported, backend.GpuLost):
                continue
        if indexes and not watched:
            raise backend.NotSupported("no GPU here can deliver XID events")

    def _index_of(self, handle: Any) -> int:
        """The index of an event's device, from the handles already known: asking NVML
        about a GPU that just fell off the bus fails."""
        wanted = _address(handle)
        for index, known in self._handles.items():
            if wanted is not None and _address(known) == wanted:
                return index
        return int(self._call("nvmlDeviceGetIndex", handle))

    def wait(self, timeout_ms: int) -> backend.Event | None:
        if self._events is None:
            raise backend.CallFailed("no event set: call watch first")
        self._calls.record()
        n = self._nvml
        try:
            data = n.nvmlEventSetWait_v2(self._events, timeout_ms)
        except n.NVMLError as exc:
            if type(exc).__name__ == "NVMLError_Timeout":
                return None
            raise self._wrap(exc) from exc
        index = self._index_of(data.device)
        xid = int(data.eventData) if data.eventType == n.nvmlEventTypeXidCriticalError else 48
        kind = "xid" if data.eventType == n.nvmlEventTypeXidCriticalError else "ecc"
        return backend.Event(index=index, kind=kind, xid=xid, at=time.time())


def _address(handle: Any) -> int | None:
    try:
        return int(ctypes.cast(handle, ctypes.c_void_p).value or 0)
    except (TypeError, ctypes.ArgumentError):
        return None


def _memory(value: Any) -> int | None:
    # NVML reports "not available" (in a container without the host PID) as a huge
    # sentinel, or None in newer bindings.
    if value is None or int(value) >= 1 << 63:
        return None
    return int(value)
