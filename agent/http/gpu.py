"""GPU routes: what the GPU engine sees (``runner-agent gpu``), and the admin's way to
clear a GPU verdict once the GPU is fixed (a verdict never clears itself)."""

from __future__ import annotations

import dataclasses
import re

from aiohttp import web
from pydantic import Field, field_validator

from agent.gpu import engine, verdicts
from agent.http import bodies, errors, models
from agent.http.context import CONTEXT, Context
from agent.platform import model

_UUID = re.compile(r"GPU-[0-9a-fA-F-]{8,64}|index-[0-9]{1,4}|\*")


class GpuDevice(models.ApiModel):
    index: int
    uuid: str
    name: str
    pci_bus_id: str
    mig: bool | None
    in_scope: bool
    healthy: bool
    lost: bool


class GpuVerdict(models.ApiModel):
    uuid: str
    index: int
    reason: str
    at: float
    message: str


class GpuStatus(models.ApiModel):
    backend: str
    """nvml, fake (a replayed H200: not hardware) or off."""
    state: str
    """ready, unavailable (no GPU support here), failed, starting or off."""
    driver_version: str | None
    cuda_driver_version: str | None
    """The highest CUDA the driver runs, e.g. 13.0."""
    health: str
    """healthy, unhealthy, unknown or off."""
    health_message: str
    events: str
    devices: list[GpuDevice]
    verdicts: list[GpuVerdict]


class ClearRequest(models.ApiRequest):
    uuid: str | None = Field(
        default=None,
        max_length=80,
        description="The GPU whose verdict goes (its UUID); none: every verdict.",
    )

    @field_validator("uuid")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is not None and not _UUID.fullmatch(value):
            raise ValueError(f"{value!r} is not a GPU UUID; expected GPU-<uuid> as /v1/gpu lists")
        return value


class ClearResponse(models.ApiModel):
    cleared: list[GpuVerdict]


def _engine(request: web.Request) -> engine.Gpu:
    gpu = request.app[CONTEXT].gpu()
    if gpu is None:
        raise errors.ApiError(503, "the GPU engine is still starting; ask again in a moment")
    return gpu


def _verdict(v: verdicts.Verdict) -> GpuVerdict:
    return GpuVerdict(uuid=v.uuid, index=v.index, reason=v.reason, at=v.at, message=v.describe())


async def get_gpu(request: web.Request) -> web.Response:
    """The GPUs, this runner's scope, their health and the driver's CUDA."""
    gpu = _engine(request)
    snap = gpu.snapshot()
    found = gpu.health_status()
    status = found[0] if found is not None else None
    system = snap.system if snap is not None else None
    sick = {v.uuid for v in status.verdicts} if status is not None else set()
    devices = []
    for device in snap.devices if snap is not None else ():
        if device.error is not None:
            continue
        read = snap.fast.get(device.index) if snap is not None else None
        devices.append(
            GpuDevice(
                index=device.index,
                uuid=device.uuid,
                name=device.name,
                pci_bus_id=device.pci_bus_id,
                mig=device.mig,
                in_scope=status is not None and device.uuid in status.scope,
                healthy=device.uuid not in sick and "*" not in sick,
                lost=bool(read and read.lost),
            )
        )
    return bodies.json_response(
        GpuStatus(
            backend=snap.backend_name if snap is not None else "off",
            state=snap.state if snap is not None else "off",
            driver_version=system.driver_version if system else None,
            cuda_driver_version="{}.{}".format(*system.cuda) if system else None,
            health=status.state if status is not None else "off",
            health_message=status.message if status is not None else "no GPU health",
            events=status.events if status is not None else "off",
            devices=devices,
            verdicts=[_verdict(v) for v in status.verdicts] if status is not None else [],
        )
    )


async def post_clear(request: web.Request) -> web.Response:
    """Clear a GPU's verdict (or every one): the GPU counts as healthy again."""
    gpu = _engine(request)
    body = await bodies.read_model(request, ClearRequest)
    if gpu.health is None:
        raise errors.ApiError(409, "there is no GPU health here (gpu.backend is off)")
    if body.uuid is not None and body.uuid not in gpu.health.verdicts:
        known = ", ".join(sorted(gpu.health.verdicts)) or "none"
        raise errors.ApiError(
            404, f"GPU {body.uuid} has no verdict to clear (verdicts: {known})", code="not_found"
        )
    cleared = gpu.health.clear(body.uuid)
    return bodies.json_response(ClearResponse(cleared=[_verdict(v) for v in cleared]))


def refuse_if_unhealthy(ctx: Context, kind: str | None, devices: list[str]) -> None:
    """A job does not start on a GPU with a verdict: it would fail in confusing ways.
    409, not 503: the hook waits out a 503 (an agent starting); this is an answer."""
    found = ctx.gpu()
    reason = found.refusal(kind, devices) if found is not None else None
    if reason is not None:
        raise errors.ApiError(
            409,
            f"this runner's GPU is unhealthy, so the job does not start here: {reason}. "
            "Replace the node or reset the GPU, then an admin clears the verdict "
            "(POST /v1/gpu/health/clear)",
            code="gpu_unhealthy",
        )


def job_opened(ctx: Context, runner: str, kind: str | None, devices: list[str]) -> None:
    """The job is open: its runner's GPUs are what health counts for that runner."""
    found = ctx.gpu()
    if found is not None and found.health is not None:
        found.health.job_devices(runner, kind, devices)


async def with_driver(ctx: Context, target: model.Platform, kind: str | None) -> model.Platform:
    """``target`` with this node's driver CUDA, when it is this machine and its runner sees
    GPUs (the hook cannot read the driver; the runner shares the node's)."""
    found = ctx.gpu()
    if target.cuda_driver is not None or found is None or kind in ("none", "void"):
        return target
    driver = found.cuda_driver()
    if driver is None or not model.same_machine(target, await ctx.installs.local()):
        return target
    return dataclasses.replace(target, cuda_driver=driver)
