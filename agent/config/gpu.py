"""The ``gpu`` settings: which NVML backend the agent reads, how a scrape collects, and
the replay backend's knobs.

Policy:
- ``auto`` (the default) reads NVML where a driver is, and on a node without one logs a
  single info line and serves every other metric: a CPU runner needs no setting;
- ``fake`` replays a real H200's captures, for demos and charts without a GPU; its
  metrics say ``backend="fake"`` so nobody mistakes them for hardware;
- a scrape never waits on NVML longer than ``scrape_deadline_seconds``: past it, the
  previous values are served and marked stale.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from agent.config.fields import RESTART, AbsolutePath, Seconds, Section

FieldName = Literal[
    "memory",
    "utilization",
    "temperature",
    "power",
    "sm_clock",
    "memory_clock",
    "pstate",
    "clock_event_reasons",
    "ecc_volatile",
    "ecc_aggregate",
    "remapped_rows",
    "encoder",
    "decoder",
    "processes",
    "pcie_tx",
    "pcie_rx",
    "energy",
    "bar1",
]


_AT = "Seconds after the agent starts. Range 0-86400 (a day)."
_GPU = "The GPU's index. Range 0-15 (16 GPUs at most)."
GpuIndex = Annotated[int, Field(ge=0, le=15)]


class FakeEvent(Section):
    """An event the replay backend raises at a time."""

    at_seconds: Seconds = Field(ge=0, le=86400, description=_AT)
    gpu: int = Field(ge=0, le=15, description=_GPU)
    xid: int = Field(
        default=79, ge=1, le=1023, description="The XID. Default 79 (off the bus). Range 1-1023."
    )


class FakeLost(Section):
    """A GPU the replay backend loses (it falls off the bus) at a time."""

    at_seconds: Seconds = Field(ge=0, le=86400, description=_AT)
    gpu: int = Field(ge=0, le=15, description=_GPU)


class FakeEcc(Section):
    """Uncorrectable ECC errors the replay backend adds at a time."""

    at_seconds: Seconds = Field(ge=0, le=86400, description=_AT)
    gpu: int = Field(ge=0, le=15, description=_GPU)
    errors: int = Field(
        default=1, ge=1, le=1_000_000, description="Errors added. Default 1. Range 1-1000000."
    )


class FakeGpuSettings(Section):
    """The replay backend (gpu.backend: fake)."""

    gpus: int = Field(
        default=1,
        ge=1,
        le=16,
        description="GPUs replayed, each with its own UUID and bus id. Default 1. Range 1-16.",
    )
    trace: Literal["replay", "idle", "load"] = Field(
        default="replay",
        description=(
            "replay (default): loop the H200's load trace (idle ~10 s, ~20 s at 99 % and "
            "~690 W, idle); idle or load: hold its first or its middle sample."
        ),
    )
    offset_seconds: Seconds = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="Seconds into the trace at start. Default 0. Range 0-3600.",
    )
    not_supported: list[FieldName] = Field(
        default_factory=list,
        description="Fields every replayed GPU answers NotSupported. Default none.",
    )
    mig: list[GpuIndex] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "Indexes of GPUs in MIG mode (utilisation NotSupported). Default none. Range 0-15 each."
        ),
    )
    lost: list[FakeLost] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "GPUs lost from a time on ({gpu: 3, at_seconds: 10}): every read raises "
            "GpuIsLost, with an XID 79 event. Default none."
        ),
    )
    xids: list[FakeEvent] = Field(
        default_factory=list,
        max_length=1000,
        description="XID events ({gpu: 0, xid: 79, at_seconds: 30}). Default none.",
    )
    ecc: list[FakeEcc] = Field(
        default_factory=list,
        max_length=1000,
        description="Uncorrectable ECC errors added, with an event. Default none.",
    )
    events: bool = Field(
        default=True,
        description="false: event registration is NotSupported (a sandboxed kernel).",
    )

    @model_validator(mode="after")
    def _indexes_exist(self) -> FakeGpuSettings:
        named = [
            *self.mig,
            *(e.gpu for e in self.lost),
            *(e.gpu for e in self.xids),
            *(e.gpu for e in self.ecc),
        ]
        for index in named:
            if not 0 <= index < self.gpus:
                raise ValueError(
                    f"GPU index {index} is not one of the {self.gpus} replayed GPUs "
                    f"(expected 0 to {self.gpus - 1}; raise gpu.fake.gpus?)"
                )
        return self


class GpuSettings(Section):
    """GPU metrics and health."""

    backend: Literal["auto", "nvml", "fake", "off"] = Field(
        default="auto",
        description=(
            "auto (default): NVML where a driver is, nothing (one info line) where none "
            "is. nvml: NVML, and a warning where it cannot be loaded. fake: replay a real "
            "H200 (gpu.fake, whose knobs also need a restart), labelled backend=fake. "
            "off: no GPU metrics."
        ),
        json_schema_extra=RESTART,
    )
    scrape_deadline_seconds: Seconds = Field(
        default=0.25,
        ge=0.01,
        le=10,
        description=(
            "Longest a /metrics scrape waits for the per-scrape GPU reads; past it the "
            "previous values are served, marked stale. Default 0.25 s. Range 0.01-10 s."
        ),
    )
    collect_interval_seconds: Seconds = Field(
        default=1.0,
        ge=0,
        le=60,
        description=(
            "A scrape within this long of the last per-scrape read is served that read: "
            "NVML averages utilisation and power over about a second, so reading faster "
            "adds nothing. Default 1 s. Range 0 (every scrape reads) to 60 s."
        ),
    )
    slow_interval_seconds: Seconds = Field(
        default=15.0,
        ge=1,
        le=3600,
        description=(
            "How often the slow reads (PCIe throughput: 21 ms per direction per GPU; total "
            "energy; BAR1) and the device list are sampled, in the background. "
            "Default 15 s. Range 1 s-1 h."
        ),
    )
    devices: list[str] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "The GPUs this runner uses, as indexes or GPU UUIDs: only these make it "
            "unhealthy. Default none: the GPUs the latest job's runner sees (its "
            "NVIDIA_VISIBLE_DEVICES), else the agent's own NVIDIA_VISIBLE_DEVICES, else "
            "every GPU."
        ),
    )
    application_xids: list[Annotated[int, Field(ge=1, le=1023)]] = Field(
        default_factory=lambda: [13, 31, 43, 45, 68, 109],
        max_length=256,
        description=(
            "XIDs that are the job's own faults (a bad kernel, a memory fault), not the "
            "GPU's: counted, never fatal. Every other XID is. Default 13, 31, 43, 45, "
            "68, 109 (as the NVIDIA device plugin). Range 1-1023 each."
        ),
    )
    ecc_threshold: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description=(
            "Uncorrectable ECC errors a GPU may add, after the agent first saw it, before "
            "it is unhealthy. Default 0: the first new one. Range 0-1000000."
        ),
    )
    drain_runner: bool = Field(
        default=False,
        description=(
            "Host mode: when one of this runner's GPUs turns unhealthy, SIGINT every "
            "process named gpu.drain_process the agent can see: the runner stops and "
            "takes no new job (a job still running on the sick GPU is cancelled). Default "
            "false: an ephemeral pod runs one job, and the hook's refusal and readiness do."
        ),
    )
    drain_process: str = Field(
        default="Runner.Listener",
        pattern=r"^[A-Za-z0-9._-]{1,15}$",
        description=(
            "The process name (as in /proc/PID/comm, 15 characters at most) that "
            "gpu.drain_runner signals. Default Runner.Listener, the runner's listener."
        ),
    )
    state_file: AbsolutePath | None = Field(
        default=None,
        description=(
            "Where GPU verdicts are kept, so a restarted agent does not forget an XID 79: "
            "a pod-local path (an emptyDir). Default gpu-health.json beside "
            "server.socket_path."
        ),
        json_schema_extra=RESTART,
    )
    fake: FakeGpuSettings = Field(default_factory=FakeGpuSettings, json_schema_extra=RESTART)
