"""GPU health on the replay backend: scoped to this runner's GPUs, XID policy, lost GPUs,
ECC growth, a watcher that fails, verdicts that survive a restart until cleared."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from agent.gpu import backend, collector, health, replay


class Changes:
    def __init__(self) -> None:
        self.seen: list[tuple[bool, str]] = []

    def __call__(self, ok: bool, message: str) -> None:
        self.seen.append((ok, message))


async def watched(
    tmp_path: Path,
    knobs: replay.Knobs,
    *,
    devices: list[str] | None = None,
    environ: dict[str, str] | None = None,
    source: backend.Backend | None = None,
) -> tuple[health.Health, Changes]:
    gpus = collector.Collector(
        source or replay.Replay(knobs), deadline=lambda: 1.0, slow_interval=lambda: 0.05
    )
    await gpus.start()
    changes = Changes()
    watcher = health.Health(
        gpus,
        devices=lambda: devices or [],
        application_xids=lambda: [13, 31, 43, 45, 68, 109],
        ecc_threshold=lambda: 0,
        state_file=tmp_path / "gpu-health.json",
        on_change=changes,
        environ=environ or {},
    )
    gpus.on_sweep.append(watcher.observe)
    await watcher.load()
    await watcher.start()
    return watcher, changes


async def until(predicate: object, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def stop(watcher: health.Health) -> None:
    await watcher.close()
    await watcher.gpus.close()


async def test_xid_79_on_a_scoped_gpu_is_fatal_and_13_is_not(tmp_path: Path) -> None:
    knobs = replay.Knobs(gpus=2, xids=((0.1, 0, 13), (0.3, 0, 79)))
    watcher, changes = await watched(tmp_path, knobs)
    assert changes.seen == [(True, "2 GPU(s) healthy")]
    await until(lambda: watcher.xids[(0, 13)] == 1)
    assert watcher.status().state == "healthy"  # the job's own fault
    await until(lambda: watcher.status().state == "unhealthy")
    status = watcher.status()
    assert status.message.startswith("gpu 0 (GPU-")
    assert " XID 79 at " in status.message
    assert changes.seen[-1][0] is False
    assert watcher.xids[(0, 79)] == 1
    await stop(watcher)


async def test_an_unscoped_gpus_xid_leaves_this_runner_healthy(tmp_path: Path) -> None:
    knobs = replay.Knobs(gpus=4, xids=((0.1, 3, 79),))
    watcher, _ = await watched(tmp_path, knobs, devices=["0", "1"])
    await until(lambda: watcher.xids[(3, 79)] == 1)
    status = watcher.status()
    assert status.state == "healthy"
    assert [v.index for v in status.verdicts] == [3]  # reported, not counted
    assert len(status.scope) == 2
    await stop(watcher)


async def test_the_scope_follows_the_jobs_gpus_then_the_agents_own(tmp_path: Path) -> None:
    knobs = replay.Knobs(gpus=4, xids=((0.1, 2, 79),))
    watcher, _ = await watched(tmp_path, knobs, environ={"NVIDIA_VISIBLE_DEVICES": "0,1"})
    await until(lambda: watcher.verdicts)
    assert watcher.status().state == "healthy"  # the agent's own list: 0 and 1
    uuid2 = watcher.gpus.devices[2].uuid
    watcher.job_devices("runner-1", "list", [uuid2])  # the runner's job sees GPU 2
    assert watcher.status().state == "unhealthy"
    watcher.job_devices("runner-1", "none", [])
    assert watcher.status().state == "healthy"
    assert watcher.status(["2"]).state == "unhealthy"  # a job's own list decides for it
    assert health.parse_devices(["0:1", f"MIG-{uuid2}/1/0"], watcher.gpus.devices) is not None
    assert health.parse_devices(["MIG-0000"], watcher.gpus.devices) is None  # all count
    await stop(watcher)


async def test_a_lost_gpu_among_eight_and_one_gone_from_the_list(tmp_path: Path) -> None:
    knobs = replay.Knobs(gpus=8, lost={5: 0.0}, events=False, slow_costs=False)
    watcher, _ = await watched(tmp_path, knobs)
    assert watcher.events == "unsupported"
    await watcher.gpus.refresh()
    status = watcher.status()
    assert status.state == "unhealthy"
    assert [(v.index, v.reason) for v in status.verdicts] == [(5, "lost (GpuIsLost: off the bus)")]
    # A device list that no longer shows a GPU is a verdict on that GPU.
    snap = watcher.gpus.snapshot()
    fewer = collector.Snapshot(**{**snap.__dict__, "devices": snap.devices[:7]})
    watcher.observe(fewer)
    assert {v.index for v in watcher.status().verdicts} == {5, 7}
    await stop(watcher)


async def test_uncorrectable_ecc_growth_is_fatal(tmp_path: Path) -> None:
    knobs = replay.Knobs(gpus=1, ecc=((0.2, 0, 2),), events=False)
    watcher, _ = await watched(tmp_path, knobs)
    await watcher.gpus.refresh()
    assert watcher.status().state == "healthy"  # the baseline
    await asyncio.sleep(0.25)
    await watcher.gpus.refresh()
    assert watcher.status().verdicts[0].reason == "2 new uncorrectable ECC errors"
    await stop(watcher)


class FailingWait(replay.Replay):
    def wait(self, timeout_ms: int) -> backend.Event | None:
        raise backend.CallFailed("Unknown Error")


async def test_a_failed_watcher_is_unknown_not_healthy(tmp_path: Path) -> None:
    watcher, changes = await watched(tmp_path, replay.Knobs(), source=FailingWait(replay.Knobs()))
    await until(lambda: watcher.events == "failed", timeout=10)
    status = watcher.status()
    assert (status.state, status.ok) == ("unknown", False)
    assert changes.seen[-1] == (False, "GPU health unknown: the XID event watcher is failed")
    await stop(watcher)


async def test_a_verdict_survives_a_restart_until_an_admin_clears_it(tmp_path: Path) -> None:
    knobs = replay.Knobs(gpus=2, xids=((0.05, 1, 79),))
    watcher, _ = await watched(tmp_path, knobs)
    await until(lambda: watcher.verdicts)
    await stop(watcher)
    state = json.loads((tmp_path / "gpu-health.json").read_text())
    assert [v["reason"] for v in state["verdicts"]] == ["XID 79"]
    # The agent restarts (a liveness probe): no new event, the verdict stands.
    again, changes = await watched(tmp_path, replay.Knobs(gpus=2))
    assert again.status().state == "unhealthy"
    assert changes.seen[0][0] is False
    [cleared] = again.clear()
    assert cleared.index == 1
    assert again.status().state == "healthy"
    assert changes.seen[-1] == (True, "2 GPU(s) healthy")
    await again.flush()
    assert json.loads((tmp_path / "gpu-health.json").read_text()) == {"verdicts": []}
    await stop(again)


@pytest.mark.parametrize(
    ("content", "mode", "why"),
    [
        (b"{not json", 0o600, "is unreadable"),
        (b'{"verdicts": [{"uuid": 1}]}', 0o600, "is unreadable"),
        (b'{"verdicts": [{"uuid": "u", "index": 0, "reason": "r", "at": 1e400}]}', 0o600,
         "is not a time"),
        (b'{"verdicts": []}', 0o666, "is linked, shared or too big"),  # job code could write it
    ],
)  # fmt: skip
async def test_unreadable_state_is_unhealthy_until_cleared(
    tmp_path: Path, content: bytes, mode: int, why: str
) -> None:
    state = tmp_path / "gpu-health.json"
    state.write_bytes(content)
    state.chmod(mode)
    watcher, _ = await watched(tmp_path, replay.Knobs())
    assert watcher.status().state == "unhealthy"
    assert why in watcher.status().message
    assert watcher.status().message.startswith("every GPU: health state ")
    watcher.clear()
    assert watcher.status().state == "healthy"
    await stop(watcher)


async def test_a_fifo_or_a_link_as_state_cannot_wedge_or_mislead(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "gpu-health.json")
    watcher, _ = await asyncio.wait_for(watched(tmp_path, replay.Knobs()), 10)
    assert "is not the agent's own file" in watcher.status().message
    await stop(watcher)
    (tmp_path / "gpu-health.json").unlink()
    (tmp_path / "elsewhere.json").write_text('{"verdicts": []}')
    (tmp_path / "gpu-health.json").symlink_to(tmp_path / "elsewhere.json")
    linked, _ = await watched(tmp_path, replay.Knobs())
    assert "cannot be opened" in linked.status().message
    await stop(linked)
