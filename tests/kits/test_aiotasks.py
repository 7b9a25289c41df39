"""Task guards: a failure or an unexpected end is logged by name; a cancel is quiet."""

from __future__ import annotations

import asyncio

import pytest

from agent.kits import aiotasks


async def test_a_guarded_failure_is_logged_by_name(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise ValueError("boom")

    await aiotasks.guard(broken(), name="the widget")
    assert "the widget has failed" in caplog.text
    assert "ValueError: boom" in caplog.text


async def test_a_forever_task_that_returns_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def quits() -> None:
        return None

    await aiotasks.guard(quits(), name="the watcher")
    assert "the watcher has finished unexpectedly" in caplog.text


async def test_cancelling_a_guarded_task_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    task = aiotasks.create_guarded_task(asyncio.sleep(10), name="sleeper")
    await asyncio.sleep(0)
    await aiotasks.stop_tasks([task], timeout=1)
    assert task.cancelled()
    assert "sleeper" not in caplog.text
