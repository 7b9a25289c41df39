"""The GPU families on the agent's registry, rendered from the collector's snapshot.

Policy:
- names carry their unit and counters end in ``_total`` (Prometheus conventions; the
  README maps them to dcgm-exporter's). Per-GPU series are labelled ``gpu`` (index),
  ``uuid``, ``pci_bus_id`` and ``model``, and never by job: a job label would make new
  series per job and reset every counter. Jobs join on ``runner_agent_job_info``;
- a field a device does not support has no sample (not a zero that reads as a value);
- rendering reads memory only: the scrape's NVML reads happened before, in
  :meth:`agent.gpu.collector.Collector.refresh`, off the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector

from agent.gpu import backend, collector, health
from agent.gpu.backend import Field

LABELS = ["gpu", "uuid", "pci_bus_id", "model"]

_GAUGES: dict[str, tuple[str, Field]] = {
    "utilization_ratio": ("Share of time a kernel ran, 0-1.", Field.UTILIZATION),
    "memory_utilization_ratio": (
        "Share of time device memory was read or written, 0-1.",
        Field.UTILIZATION,
    ),
    "memory_used_bytes": ("Device memory in use, in bytes.", Field.MEMORY),
    "memory_total_bytes": ("Device memory, in bytes.", Field.MEMORY),
    "temperature_celsius": ("GPU core temperature, in degrees Celsius.", Field.TEMPERATURE),
    "power_watts": ("Power draw, in watts.", Field.POWER),
    "sm_clock_hertz": ("SM clock, in hertz.", Field.SM_CLOCK),
    "memory_clock_hertz": ("Memory clock, in hertz.", Field.MEMORY_CLOCK),
    "performance_state": ("Performance state (0 is P0, the fastest).", Field.PSTATE),
    "clock_event_reasons": (
        "Bitmask of why clocks are held down (NVML clock event reasons).",
        Field.CLOCK_EVENT_REASONS,
    ),
    "encoder_utilization_ratio": ("Video encoder utilisation, 0-1.", Field.ENCODER),
    "decoder_utilization_ratio": ("Video decoder utilisation, 0-1.", Field.DECODER),
    "pcie_tx_bytes_per_second": (
        "PCIe transmit throughput (a 20 ms sample), in bytes per second.",
        Field.PCIE_TX,
    ),
    "pcie_rx_bytes_per_second": (
        "PCIe receive throughput (a 20 ms sample), in bytes per second.",
        Field.PCIE_RX,
    ),
    "bar1_used_bytes": ("BAR1 memory in use, in bytes.", Field.BAR1),
}


def _scalar(name: str, value: backend.Value) -> float | None:
    match value:
        case backend.Utilization(gpu=gpu, memory=memory):
            return memory if name.startswith("memory_") else gpu
        case backend.Memory(used=used, total=total):
            return total if name.endswith("total_bytes") else used
        case int() | float():
            return float(value)
    return None


class GpuMetrics(PromCollector):
    """A prometheus_client collector over a :class:`~agent.gpu.collector.Collector`."""

    def __init__(
        self,
        source: Callable[[], collector.Snapshot | None],
        health_of: Callable[[], tuple[health.Status, dict[tuple[int, int], int]] | None],
    ) -> None:
        self._source = source
        self._health = health_of

    def describe(self) -> list[Metric]:
        return []  # unchecked: the families depend on what the devices support

    def collect(self) -> Iterator[Metric]:
        snap = self._source()
        backend_name = snap.backend_name if snap is not None else "off"
        state = snap.state if snap is not None else "off"
        info = GaugeMetricFamily(
            "runner_agent_gpu_backend_info",
            "Always 1; backend is nvml, fake (a replayed H200: not hardware) or off, and "
            "state ready, unavailable (no GPU support here), failed, starting or off.",
            labels=["backend", "state"],
        )
        info.add_metric([backend_name, state], 1)
        yield info
        if snap is None or snap.state != "ready":
            return
        yield from self._devices(snap)
        yield from self._collection(snap)
        found = self._health()
        if found is not None:
            yield from self._health_families(snap, *found)

    def _health_families(
        self, snap: collector.Snapshot, status: health.Status, xids: dict[tuple[int, int], int]
    ) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "runner_agent_gpu_health_info",
            "Always 1; state is this runner's GPU health (healthy, unhealthy, unknown) and "
            "events how XIDs are seen (watching, unsupported: polled only, failed).",
            labels=["state", "events"],
        )
        state.add_metric([status.state, status.events], 1)
        yield state
        healthy = GaugeMetricFamily(
            "runner_agent_gpu_healthy",
            "1 while the GPU has no verdict (an XID, a loss, ECC errors), 0 after one, until "
            "an admin clears it.",
            labels=LABELS,
        )
        scoped = GaugeMetricFamily(
            "runner_agent_gpu_in_scope",
            "1 for the GPUs this runner uses: only their health counts for it.",
            labels=LABELS,
        )
        counted = CounterMetricFamily(
            "runner_agent_gpu_xid_errors",
            "XID events seen since the agent started, by XID (a counter: unlike a last-XID "
            "gauge, it says how many and never hides one behind the next).",
            labels=[*LABELS, "xid"],
        )
        sick = {v.uuid for v in status.verdicts}
        for device in snap.devices:
            if device.error is not None:
                continue
            labels = [str(device.index), device.uuid, device.pci_bus_id, device.name]
            healthy.add_metric(labels, 0 if device.uuid in sick or "*" in sick else 1)
            scoped.add_metric(labels, 1 if device.uuid in status.scope else 0)
            for (index, xid), count in sorted(xids.items()):
                if index == device.index:
                    counted.add_metric([*labels, str(xid)], count)
        yield from (healthy, scoped, counted)

    def _devices(self, snap: collector.Snapshot) -> Iterator[Metric]:
        system = snap.system
        driver = system.driver_version if system else ""
        cuda = "{}.{}".format(*system.cuda) if system else ""
        info = GaugeMetricFamily(
            "runner_agent_gpu_info",
            "Always 1 per GPU; the labels say which device, driver and backend.",
            labels=[*LABELS, "backend", "driver_version", "cuda_driver_version", "mig_mode"],
        )
        lost = GaugeMetricFamily(
            "runner_agent_gpu_lost", "1 while the GPU answers GpuIsLost.", labels=LABELS
        )
        gauges = {
            name: GaugeMetricFamily(f"runner_agent_gpu_{name}", text, labels=LABELS)
            for name, (text, _) in _GAUGES.items()
        }
        energy = CounterMetricFamily(
            "runner_agent_gpu_energy_joules",
            "Energy the GPU used since the driver loaded, in joules.",
            labels=LABELS,
        )
        ecc = CounterMetricFamily(
            "runner_agent_gpu_ecc_errors",
            "ECC errors over the GPU's life (aggregate), by type corrected or uncorrected.",
            labels=[*LABELS, "type"],
        )
        ecc_volatile = GaugeMetricFamily(
            "runner_agent_gpu_ecc_volatile_errors",
            "ECC errors since the driver loaded, by type corrected or uncorrected.",
            labels=[*LABELS, "type"],
        )
        remapped = GaugeMetricFamily(
            "runner_agent_gpu_remapped_rows",
            "Memory rows remapped, by cause correctable or uncorrectable.",
            labels=[*LABELS, "type"],
        )
        remap_state = GaugeMetricFamily(
            "runner_agent_gpu_row_remap_state",
            "1 when a row remap is pending (a reset applies it) or has failed, by state.",
            labels=[*LABELS, "state"],
        )
        processes = GaugeMetricFamily(
            "runner_agent_gpu_processes", "Compute processes on the GPU.", labels=LABELS
        )
        for device in snap.devices:
            if device.error is not None:
                continue
            labels = [str(device.index), device.uuid, device.pci_bus_id, device.name]
            mig = {True: "enabled", False: "disabled", None: "unknown"}[device.mig]
            info.add_metric([*labels, snap.backend_name, driver, cuda, mig], 1)
            fast = snap.fast.get(device.index, collector.Readings())
            slow = snap.slow.get(device.index, collector.Readings())
            lost.add_metric(labels, 1 if fast.lost or slow.lost else 0)
            values = {**slow.values, **fast.values}
            for name, (_, what) in _GAUGES.items():
                if what in values:
                    scalar = _scalar(name, values[what])
                    if scalar is not None:
                        gauges[name].add_metric(labels, scalar)
            match values.get(Field.ENERGY):
                case int() | float() as joules:
                    energy.add_metric(labels, float(joules))
            for what, family in ((Field.ECC_AGGREGATE, ecc), (Field.ECC_VOLATILE, ecc_volatile)):
                match values.get(what):
                    case backend.Ecc(corrected=corrected, uncorrected=uncorrected):
                        family.add_metric([*labels, "corrected"], corrected)
                        family.add_metric([*labels, "uncorrected"], uncorrected)
            match values.get(Field.REMAPPED_ROWS):
                case backend.RemappedRows() as rows:
                    remapped.add_metric([*labels, "correctable"], rows.correctable)
                    remapped.add_metric([*labels, "uncorrectable"], rows.uncorrectable)
                    remap_state.add_metric([*labels, "pending"], int(rows.pending))
                    remap_state.add_metric([*labels, "failed"], int(rows.failed))
            match values.get(Field.PROCESSES):
                case tuple() as procs:
                    processes.add_metric(labels, len(procs))
        yield info
        yield lost
        yield from gauges.values()
        yield from (energy, ecc, ecc_volatile, remapped, remap_state, processes)

    def _collection(self, snap: collector.Snapshot) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "runner_agent_gpu_collect_errors",
            "GPU reads that failed (NotSupported fields and lost GPUs are not failures).",
        )
        errors.add_metric([], snap.errors)
        yield errors
        misses = CounterMetricFamily(
            "runner_agent_gpu_scrape_deadline_misses",
            "Scrapes served earlier GPU values because the reads passed gpu.scrape_deadline.",
        )
        misses.add_metric([], snap.deadline_misses)
        yield misses
        last = GaugeMetricFamily(
            "runner_agent_gpu_last_collect_timestamp_seconds",
            "Unix time the per-scrape GPU values were read.",
        )
        last.add_metric([], snap.collected_at)
        yield last
        stale = GaugeMetricFamily(
            "runner_agent_gpu_stale",
            "1 when this scrape was served earlier GPU values (see the timestamp).",
        )
        stale.add_metric([], 1 if snap.stale else 0)
        yield stale
