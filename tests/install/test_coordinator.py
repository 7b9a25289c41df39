"""The coordinator in process, on a fake worker pool: coalescing, a requester that goes
away, a dead worker, the parallelism bound and a reload of it. Every wait is on an
event the test sets; nothing sleeps or times anything."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.config import models
from agent.install import coordinator, protocol
from agent.install import metrics as install_metrics
from agent.kits import progress
from agent.store import entries, layout, receipts


class FakePool:
    """Installs that end when the test says so; counts calls and the most at once."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.running = 0
        self.most = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.started: dict[str, asyncio.Event] = {}
        self.failures: dict[str, BaseException] = {}
        self.closed = False

    def gate(self, ident: str) -> asyncio.Event:
        return self.gates.setdefault(ident, asyncio.Event())

    def began(self, ident: str) -> asyncio.Event:
        return self.started.setdefault(ident, asyncio.Event())

    async def install(
        self,
        root: str,
        step: dict[str, Any],
        *,
        lock: tuple[str, float],
        options: protocol.Options,
        listener: progress.Listener,
    ) -> entries.Installed:
        ident = step["id"]
        self.calls.append(ident)
        self.running += 1
        self.most = max(self.most, self.running)
        self.began(ident).set()
        try:
            listener("downloading", {"url": f"http://127.0.0.1/{ident}", "bytes": 7, "total": 7})
            await self.gate(ident).wait()
            if ident in self.failures:
                raise self.failures.pop(ident)
            store = layout.Store(Path(root))
            entry = entries.entry_of(store, step["prefix"])
            receipt = receipts.Receipt(
                feature=ident,
                version=step["version"],
                key=entry.key,
                platform={},
                method="archive",
                sources=(),
                size=0,
                install_seconds=0.0,
                agent_version="test",
                created=0.0,
                check="no check declared",
                env={"path": ["bin"], "vars": {}},
                manifest={},
            )
            return entries.Installed(entry, receipt, cached=False)
        finally:
            self.running -= 1

    def close(self) -> None:
        self.closed = True


class Live:
    """Settings that a test replaces, as a reload does."""

    def __init__(self, root: Path, parallelism: int) -> None:
        self.settings = self.make(root, parallelism)

    @staticmethod
    def make(root: Path, parallelism: int) -> models.Settings:
        return models.Settings.model_validate(
            {"cache": {"root": str(root)}, "installer": {"parallelism": parallelism}}
        )

    def __call__(self) -> models.Settings:
        return self.settings


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def pool() -> FakePool:
    return FakePool()


@pytest.fixture
def live(root: Path) -> Live:
    return Live(root, parallelism=2)


@pytest.fixture
def installs(live: Live, pool: FakePool) -> coordinator.Coordinator:
    return coordinator.Coordinator(live, install_metrics.InstallMetrics(None), pool=lambda: pool)


def step(root: Path, ident: str) -> dict[str, Any]:
    return {
        "id": ident,
        "version": "1.0.0",
        "method": "archive",
        "prefix": str(root / ident / "1.0.0" / "x64"),
        "actions": [],
        "env": {"path": [], "vars": {}},
        "round": 0,
    }


PLATFORM = {"os": "linux", "arch": "x64", "libc": "glibc"}


def _ignore(event: dict[str, Any]) -> None:
    """A requester that does not look at progress."""


async def test_identical_requests_coalesce_into_one_install(
    installs: coordinator.Coordinator, pool: FakePool, root: Path
) -> None:
    heard: list[list[dict[str, Any]]] = [[], [], []]
    waits = [
        asyncio.ensure_future(installs.ensure_step(step(root, "tool"), PLATFORM, h.append))
        for h in heard
    ]
    await pool.began("tool").wait()
    assert installs.running == 1
    pool.gate("tool").set()
    outcomes = await asyncio.gather(*waits)
    assert pool.calls == ["tool"]
    assert {o.result for o in outcomes} == {"installed"}
    assert len({id(o) for o in outcomes}) == 1  # one outcome, shared
    assert installs.running == 0


async def test_a_requester_that_goes_away_does_not_cancel_the_install(
    installs: coordinator.Coordinator, pool: FakePool, root: Path
) -> None:
    gone = asyncio.ensure_future(installs.ensure_step(step(root, "tool"), PLATFORM, _ignore))
    await pool.began("tool").wait()
    gone.cancel()  # the client disconnected
    await asyncio.gather(gone, return_exceptions=True)
    stays = asyncio.ensure_future(installs.ensure_step(step(root, "tool"), PLATFORM, _ignore))
    await asyncio.sleep(0)
    pool.gate("tool").set()
    outcome = await stays
    assert outcome.result == "installed"
    assert pool.calls == ["tool"]  # the second requester joined the same install


async def test_a_dead_worker_fails_every_waiter_and_the_next_install_runs_afresh(
    installs: coordinator.Coordinator, pool: FakePool, root: Path
) -> None:
    pool.failures["tool"] = protocol.InstallError("tool 1.0.0", "worker", "the worker died")
    waits = [
        asyncio.ensure_future(installs.ensure_step(step(root, "tool"), PLATFORM, _ignore))
        for _ in range(2)
    ]
    await pool.began("tool").wait()
    pool.gate("tool").set()
    failures = await asyncio.gather(*waits, return_exceptions=True)
    assert all(isinstance(f, protocol.InstallError) and f.step == "worker" for f in failures)
    assert installs.running == 0
    again = await installs.ensure_step(step(root, "tool"), PLATFORM, _ignore)
    assert again.result == "installed"
    assert pool.calls == ["tool", "tool"]


async def test_progress_reaches_every_listener_of_the_install(
    installs: coordinator.Coordinator, pool: FakePool, root: Path
) -> None:
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    a = asyncio.ensure_future(installs.ensure_step(step(root, "tool"), PLATFORM, first.append))
    b = asyncio.ensure_future(installs.ensure_step(step(root, "tool"), PLATFORM, second.append))
    await pool.began("tool").wait()
    await asyncio.sleep(0)  # the thread-safe hand-off of the event
    pool.gate("tool").set()
    await asyncio.gather(a, b)
    assert [e["event"] for e in first] == ["downloading"]
    assert first == second
    assert first[0]["feature"] == "tool"


async def _settle() -> None:
    # Let every task that can make progress make it (lookups run in threads).
    for _ in range(50):
        await asyncio.sleep(0)


async def _wait_started(pool: FakePool, count: int) -> None:
    while len(pool.calls) < count:
        await asyncio.sleep(0.001)  # bounded by the test's timeout; not a timing assertion


async def test_parallelism_bounds_the_installs_running_at_once(
    installs: coordinator.Coordinator, pool: FakePool, root: Path
) -> None:
    names = ["a", "b", "c", "d"]
    waits = [
        asyncio.ensure_future(installs.ensure_step(step(root, n), PLATFORM, _ignore)) for n in names
    ]
    await _wait_started(pool, 2)
    await _settle()
    assert pool.running == 2
    assert installs.slots.held == 2
    for name in list(pool.calls):
        pool.gate(name).set()
    await _wait_started(pool, 4)
    for name in names:
        pool.gate(name).set()
    await asyncio.gather(*waits)
    assert pool.most == 2
    assert sorted(pool.calls) == names


async def test_a_reload_that_raises_parallelism_admits_waiting_installs_at_once(
    installs: coordinator.Coordinator, pool: FakePool, live: Live, root: Path
) -> None:
    names = ["a", "b", "c", "d"]
    waits = [
        asyncio.ensure_future(installs.ensure_step(step(root, n), PLATFORM, _ignore)) for n in names
    ]
    await _wait_started(pool, 2)
    await _settle()
    assert pool.running == 2
    live.settings = Live.make(root, 4)  # a reload
    installs.reconfigured()
    await _wait_started(pool, 4)
    assert pool.running == 4
    for name in names:
        pool.gate(name).set()
    await asyncio.gather(*waits)
    assert pool.most == 4


async def test_a_reload_that_lowers_parallelism_applies_as_installs_finish(
    installs: coordinator.Coordinator, pool: FakePool, live: Live, root: Path
) -> None:
    waits = [
        asyncio.ensure_future(installs.ensure_step(step(root, n), PLATFORM, _ignore))
        for n in ["a", "b", "c", "d"]
    ]
    await _wait_started(pool, 2)
    live.settings = Live.make(root, 1)
    installs.reconfigured()
    first, second = pool.calls
    pool.gate(first).set()
    await _settle()
    assert (pool.running, len(pool.calls)) == (1, 2)  # none replaced the finished one
    pool.gate(second).set()
    await _wait_started(pool, 3)
    await _settle()
    assert (pool.running, len(pool.calls)) == (1, 3)  # one at a time from now on
    for name in ["a", "b", "c", "d"]:
        pool.gate(name).set()
    await asyncio.gather(*waits)


async def test_close_stops_the_pool_and_ends_the_tasks(
    installs: coordinator.Coordinator, pool: FakePool, root: Path
) -> None:
    wait = asyncio.ensure_future(installs.ensure_step(step(root, "tool"), PLATFORM, _ignore))
    await pool.began("tool").wait()
    pool.gate("tool").set()
    await wait
    await installs.close()
    assert pool.closed


async def test_system_steps_are_left_to_the_runner_in_a_sidecar(
    installs: coordinator.Coordinator, pool: FakePool, root: Path
) -> None:
    system = {**step(root, "hello"), "method": "system", "prefix": None}
    outcome = await installs.ensure_step(system, PLATFORM, _ignore)
    assert outcome.result == "left"
    assert pool.calls == []


async def test_slots_are_first_come_first_served_and_a_cancelled_waiter_passes_its_turn_on() -> (
    None
):
    slots = coordinator.Slots(lambda: 1)
    order: list[str] = []
    release = asyncio.Event()

    async def take(name: str) -> None:
        async with slots():
            order.append(name)
            await release.wait()

    holder = asyncio.ensure_future(take("holder"))
    await _settle()
    a = asyncio.ensure_future(take("a"))
    b = asyncio.ensure_future(take("b"))
    await _settle()
    assert slots.held == 1
    release.set()  # the holder leaves: its slot is handed to a, which is cancelled at once
    await asyncio.sleep(0)
    a.cancel()
    c = asyncio.ensure_future(take("c"))  # a newcomer must not overtake b
    await asyncio.gather(holder, a, b, c, return_exceptions=True)
    assert order == ["holder", "b", "c"]
    assert slots.held == 0


async def test_close_refuses_queued_installs_instead_of_starting_them(
    installs: coordinator.Coordinator, pool: FakePool, live: Live, root: Path
) -> None:
    live.settings = Live.make(root, 1)
    running = asyncio.ensure_future(installs.ensure_step(step(root, "a"), PLATFORM, _ignore))
    await pool.began("a").wait()
    queued = asyncio.ensure_future(installs.ensure_step(step(root, "b"), PLATFORM, _ignore))
    while installs.slots.waiting == 0:  # b's lookup runs in a thread, then it queues
        await asyncio.sleep(0.001)  # bounded by the test's timeout; not a timing assertion
    closing = asyncio.ensure_future(installs.close())
    await _settle()
    pool.gate("a").set()  # the running one ends (a real pool's close kills it)
    await closing
    outcomes = await asyncio.gather(running, queued, return_exceptions=True)
    assert pool.closed
    assert pool.calls == ["a"]  # b never started
    assert isinstance(outcomes[1], coordinator.Stopping)
    assert "the agent is stopping" in str(outcomes[1])
    later = await asyncio.gather(
        installs.ensure_step(step(root, "c"), PLATFORM, _ignore), return_exceptions=True
    )
    assert isinstance(later[0], coordinator.Stopping)
