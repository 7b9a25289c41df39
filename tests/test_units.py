"""In-process checks of the small engines: reload coalescing, task guards, log formats,
the step executor and the progress view."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import pytest

from agent.cli import progressview
from agent.config import models, reloading, tokens
from agent.kits import aiotasks, logs, procs


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


def test_json_log_lines_carry_context() -> None:
    record = logging.LogRecord("agent.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.condition = "api"
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["level"] == "warning"
    assert line["logger"] == "agent.x"
    assert line["message"] == "hello you"
    assert line["condition"] == "api"
    assert line["timestamp"].endswith("Z")
    assert "T" in line["timestamp"]


def test_text_log_lines_append_context() -> None:
    record = logging.LogRecord("agent.x", logging.INFO, __file__, 1, "hi", (), None)
    record.port = 9102
    assert logs.TextFormatter().format(record).endswith("agent.x: hi port=9102")


def test_the_pending_task_fixture_fails_a_leaky_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from tests.conftest import _no_pending_tasks  # noqa: F401\n")
    pytester.makepyfile(
        """
        import asyncio

        async def test_leaks():
            asyncio.get_running_loop().create_task(asyncio.sleep(5), name="leaked-sleep")
        """
    )
    result = pytester.runpytest_subprocess("-p", "asyncio", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*left asyncio tasks pending: leaked-sleep*"])


def test_a_skip_under_ci_is_a_failure(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(
        """
        import pytest

        def test_skips():
            pytest.skip("no docker here")
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*skipped under CI=true*no docker here*"])


def test_text_logs_escape_control_characters() -> None:
    record = logging.LogRecord("agent.x", logging.INFO, __file__, 1, "reload", (), None)
    record.reason = "line\nforged: yes"
    assert "\n" not in logs.TextFormatter().format(record)


def test_a_command_done_while_its_child_holds_the_pipe_is_not_a_timeout() -> None:
    started = time.monotonic()
    done = procs.run(["sh", "-c", "sleep 120 & echo parent done"], env=dict(os.environ), timeout=30)
    assert done.ok
    assert "parent done" in done.output
    assert time.monotonic() - started < 10


def test_progress_lines_show_control_characters_escaped() -> None:
    assert progressview.clean("a\rb\x1b[2Jc") == "a\\x0db\\x1b[2Jc"
    assert progressview.clean("tab\tok") == "tab\\x09ok"
