"""The supervisor's fault paths, with small purpose-built services (tests/services/fakes).

Delays are read from the supervisor's own record of what it scheduled, never timed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from agent.services import processes
from tests.services.conftest import fake
from tests.services.engine import running, spec, until


async def test_a_crash_loop_backs_off_exponentially_then_fails(strays: Path) -> None:
    crash = spec(
        command=fake("crash", strays),
        restart={
            "backoff_initial_seconds": 0.02,
            "backoff_multiplier": 2,
            "backoff_max_seconds": 0.1,
            "jitter": 0.5,
            "start_limit_burst": 5,
            "start_limit_window_seconds": 60,
        },
    )
    async with running({"crash": crash}) as sup:
        service = sup.get("crash")
        await until(lambda: service.state == "failed")
        planned = list(service.backoff.history)
        assert [p.base_seconds for p in planned] == [0.02, 0.04, 0.08, 0.1, 0.1]
        assert all(p.base_seconds * 0.5 <= p.delay_seconds <= p.base_seconds for p in planned)
        assert service.restarts == {"exit": 5, "unhealthy": 0, "manual": 0}
        assert service.last_exit == 3
        assert "started 5 times within 60 s" in service.message
        assert [line.text for line in service.output.tail(1)] == [
            f"crashing on purpose in {strays}"
        ]
        # An operator's start clears the limit: it runs (and crashes) again.
        service.request("start")
        await until(lambda: service.restarts["exit"] > 5)


async def test_on_failure_leaves_a_clean_exit_stopped(strays: Path) -> None:
    true = spec(command=["/bin/true", str(strays)], restart={"policy": "on-failure"})
    never = spec(command=fake("crash", strays), restart={"policy": "never"})
    async with running({"clean": true, "never": never}) as sup:
        await until(lambda: sup.get("clean").state == "stopped" and sup.get("clean").last_exit == 0)
        await until(lambda: sup.get("never").state == "failed")
        assert sup.get("never").restarts["exit"] == 0


async def test_a_service_ignoring_sigterm_is_killed_after_the_grace(strays: Path) -> None:
    stubborn = spec(command=fake("ignore_term", strays), stop={"grace_seconds": 0.3})
    async with running({"stubborn": stubborn}) as sup:
        service = sup.get("stubborn")
        await until(lambda: service.state == "running" and service.output.tail(1))
        pid = service.pid
        service.request("stop")
        await until(lambda: service.state == "stopped")
        assert service.last_exit == -9  # SIGTERM was ignored; SIGKILL ended it
        assert pid is not None
        assert not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("parent", ["sleeps", "exits"])
async def test_a_grandchild_dies_with_its_group(strays: Path, parent: str) -> None:
    args = ["exit"] if parent == "exits" else []
    forker = spec(command=fake("forker", strays, *args), restart={"policy": "never"})
    async with running({"forker": forker}) as sup:
        service = sup.get("forker")
        pidfile = strays / "grandchild.pid"
        await until(pidfile.exists)
        grandchild = int(pidfile.read_text())
        if parent == "sleeps":
            service.request("stop")
        await until(lambda: service.state in ("stopped", "failed"))
        # The group is SIGKILLed before the leader is reaped; the init reaps the rest.
        await until(lambda: not _alive(grandchild))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[-1].split()[0] != b"Z"


async def test_a_flood_of_output_is_rate_limited_and_the_loop_stays_responsive(
    strays: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.services.output")
    flood = spec(
        command=fake("flood", strays),
        output={"lines_per_second": 20, "burst": 10, "buffer_lines": 500},
    )
    async with running({"flood": flood}) as sup:
        service = sup.get("flood")
        await until(lambda: service.output.dropped_total > 100_000, timeout=30)
        # The loop answers a sleep promptly while the flood goes on.
        loop = asyncio.get_running_loop()
        lags = []
        for _ in range(20):
            before = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - before - 0.01)
        assert sorted(lags)[len(lags) // 2] < 0.1
        assert len(service.output.lines) == 500
        assert service.output.lines[-1].text.startswith("flood line ")
    logged = [r for r in caplog.records if getattr(r, "service", None) == "flood"]
    forwarded = [r for r in logged if getattr(r, "stream", None) == "stdout"]
    # burst + rate x the test's few seconds: a tiny share of the lines written.
    assert 10 <= len(forwarded) < 1000
    assert any("not logged" in r.getMessage() for r in logged)


async def test_a_service_that_never_becomes_healthy_is_restarted_after_its_start_period(
    strays: Path,
) -> None:
    sock = strays / "never.sock"
    never = spec(
        command=fake("httpd", strays, str(sock), "never"),
        health={
            "kind": "http",
            "socket": str(sock),
            "path": "/health",
            "interval_seconds": 0.1,
            "timeout_seconds": 0.1,
            "failure_threshold": 2,
            "start_period_seconds": 0.5,
        },
    )
    async with running({"never": never}) as sup:
        service = sup.get("never")
        await until(lambda: service.restarts["unhealthy"] >= 1)
        assert service.restarts["exit"] == 0
        assert service.last_health is not None
        assert "HTTP 503" in service.last_health.message
        assert service.state in ("restarting", "starting")


async def test_a_hung_service_is_killed_and_restarted_as_unhealthy(strays: Path) -> None:
    sock = strays / "hang.sock"
    svc = spec(
        command=fake("httpd", strays, str(sock)),
        health={
            "kind": "http",
            "socket": str(sock),
            "path": "/health",
            "expect_body": "OK",
            "interval_seconds": 0.2,
            "timeout_seconds": 0.1,
            "failure_threshold": 2,
            "start_period_seconds": 5,
        },
        stop={"grace_seconds": 0.5},
    )
    async with running({"svc": svc}) as sup:
        service = sup.get("svc")
        await until(lambda: service.state == "running")
        assert service.up
        pid = service.pid
        assert pid is not None
        os.kill(pid, 19)  # SIGSTOP: alive, accepting connections, never answering
        await until(lambda: service.restarts["unhealthy"] == 1)
        await until(lambda: service.state == "running" and service.pid != pid)
        assert service.restarts["exit"] == 0
        # SIGTERM after SIGCONT let it stop by itself, within the grace.
        assert service.last_exit == -15


async def test_a_missing_program_is_a_fault_with_a_clear_message(strays: Path) -> None:
    missing = spec(command=[str(strays / "no-such-program")], restart={"start_limit_burst": 2})
    async with running({"missing": missing}) as sup:
        service = sup.get("missing")
        await until(lambda: service.state == "failed")
        assert service.backoff.history[0].base_seconds == 0.05
    assert processes.describe_exit(None) == "did not start"
