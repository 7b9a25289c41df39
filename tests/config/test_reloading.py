"""The reloader in process: a storm of requests coalesces, and restart-only settings
keep their running value."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.config import models, reloading, tokens


def loaded(generation: int = 1) -> reloading.Loaded:
    return reloading.Loaded(
        settings=models.Settings(), tokens=tokens.Tokens(), generation=generation, source="t"
    )


async def test_a_storm_of_requests_costs_at_most_two_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("{}\n")
    calls = 0
    real = reloading.load_snapshot

    def slow_load(*args: object, **kwargs: object) -> reloading.Loaded:
        nonlocal calls
        calls += 1
        import time

        time.sleep(0.2)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reloading, "load_snapshot", slow_load)
    reloader = reloading.Reloader(path, loaded())
    task = asyncio.create_task(reloader.run())
    for _ in range(10):
        reloader.request("storm")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.7)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert calls == 2
    assert reloader.current.generation == 3


async def test_restart_only_fields_keep_their_running_value(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("server:\n  metrics_address: 0.0.0.0:1\nlogging:\n  level: debug\n")
    reloader = reloading.Reloader(path, loaded())
    outcome = await reloader.reload("test")
    assert outcome.ok
    assert outcome.restart_required == ("server.metrics_address",)
    assert set(outcome.changed) == {"server.metrics_address", "logging.level"}
    assert reloader.current.settings.server.metrics_address == "127.0.0.1:9102"
    assert reloader.current.settings.logging.level == "debug"
    path.write_text("logging:\n  level: debug\n")  # back to the running address
    assert (await reloader.reload("test")).restart_required == ()
