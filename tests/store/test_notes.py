"""Notes agents leave on the shared store: private, bounded, never through a link, and
one writer at a time per key across agents."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.store import layout, locks, notes


def make(root: Path) -> notes.Notes:
    return notes.Notes(layout.Store(root), locks.PosixLocks())


async def test_a_note_is_read_back_until_it_is_too_old(tmp_path: Path) -> None:
    shelf = make(tmp_path)
    await shelf.write("jobs", "octo/app/7/1", b'{"a": 1}')
    assert await shelf.read("jobs", "octo/app/7/1", max_age=60) == b'{"a": 1}'
    assert await shelf.read("jobs", "octo/app/7/2", max_age=60) is None
    folder = tmp_path / ".runner-agent" / "notes" / "jobs"
    [note] = [p for p in folder.iterdir() if not p.name.startswith("lock-")]
    old = time.time() - 120
    os.utime(note, (old, old))
    assert await shelf.read("jobs", "octo/app/7/1", max_age=60) is None
    # Private: a team file of a private repository is no job's to read.
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(note.stat().st_mode) == 0o600
    await shelf.forget("jobs", "octo/app/7/1")
    assert not note.exists()


async def test_a_note_under_another_key_or_through_a_link_is_no_note(tmp_path: Path) -> None:
    shelf = make(tmp_path)
    await shelf.write("team", "a@1:f", b"text")
    folder = tmp_path / ".runner-agent" / "notes" / "team"
    [note] = [p for p in folder.iterdir() if not p.name.startswith("lock-")]
    note.write_bytes(b"b@2:f\nplanted")  # the hash's file, the wrong key inside
    assert await shelf.read("team", "a@1:f", max_age=60) is None
    secret = tmp_path / "secret"
    secret.write_bytes(b"a@1:f\nsecret")
    note.unlink()
    note.symlink_to(secret)
    assert await shelf.read("team", "a@1:f", max_age=60) is None
    await shelf.write("team", "a@1:f", b"new")  # the link is replaced, not written through
    assert secret.read_bytes() == b"a@1:f\nsecret"
    assert await shelf.read("team", "a@1:f", max_age=60) == b"new"


async def test_a_linked_notes_folder_is_refused_and_a_write_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "store" / ".runner-agent").mkdir(parents=True)
    (tmp_path / "store" / ".runner-agent" / "notes").symlink_to(elsewhere)
    shelf = make(tmp_path / "store")
    await shelf.write("jobs", "k", b"x")  # never raises: a note only saves requests
    assert list(elsewhere.iterdir()) == []
    assert "cannot leave a jobs note" in caplog.text
    assert await shelf.read("jobs", "k", max_age=60) is None
    async with shelf.exclusive("jobs", "k", wait=0.1) as held:
        assert held is False


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder another user own")
async def test_a_folder_someone_else_owns_is_not_used(tmp_path: Path) -> None:
    folder = tmp_path / ".runner-agent" / "notes" / "jobs"
    folder.mkdir(parents=True)
    # Whoever owns it could have left a note that reads well: it is not read.
    (folder / notes._name("k")).write_bytes(b"jobs\0k\nplanted")
    (folder / notes._name("k")).chmod(0o600)  # a note as the agent would leave it
    os.chown(folder, 12345, 12345)
    folder.chmod(0o700)
    shelf = make(tmp_path)
    assert await shelf.read("jobs", "k", max_age=60) is None
    await shelf.write("jobs", "k", b"x")
    assert [p.read_bytes() for p in folder.iterdir()] == [b"jobs\0k\nplanted"]


async def test_bad_sizes_and_kinds_are_refused(tmp_path: Path) -> None:
    shelf = make(tmp_path)
    with pytest.raises(ValueError, match="not a note kind"):
        await shelf.read("../x", "k", max_age=1)
    await shelf.write("jobs", "k", b"x" * (notes.MAX_BYTES + 1))
    assert await shelf.read("jobs", "k", max_age=60) is None


async def test_a_kind_keeps_its_newest_notes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notes, "MAX_NOTES", 5)
    shelf = make(tmp_path)
    for i in range(8):
        await shelf.write("jobs", f"k{i}", b"x")
    folder = tmp_path / ".runner-agent" / "notes" / "jobs"
    for i, path in enumerate(sorted(folder.iterdir())):
        at = time.time() - 1000 + i
        os.utime(path, (at, at) if not path.name.startswith("lock-") else None)
    monkeypatch.setattr(notes, "SWEEP_EVERY", 0.0)
    await shelf.write("jobs", "new", b"x")
    kept = [p for p in folder.iterdir() if not p.name.startswith("lock-")]
    assert len(kept) == 5
    assert await shelf.read("jobs", "new", max_age=60) == b"x"


async def test_one_holder_at_a_time_and_a_waiter_gives_up_at_its_wait(tmp_path: Path) -> None:
    first, second = make(tmp_path), make(tmp_path)
    order: list[str] = []

    async def hold(shelf: notes.Notes, name: str, seconds: float) -> None:
        async with shelf.exclusive("jobs", "run", wait=5) as held:
            assert held
            order.append(f"{name} in")
            await asyncio.sleep(seconds)
            order.append(f"{name} out")

    await asyncio.gather(hold(first, "a", 0.3), hold(second, "b", 0))
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    async with first.exclusive("jobs", "run", wait=5):
        began = time.monotonic()
        async with second.exclusive("jobs", "run", wait=0.2) as held:
            assert held is False
        assert time.monotonic() - began < 2


async def test_many_waiters_tie_up_no_threads(tmp_path: Path) -> None:
    # 64 waiters on one lock must not fill the default executor: the holder's release
    # runs in a thread too, and would never get one.
    shelf = make(tmp_path)
    done: list[int] = []

    async def one(i: int) -> None:
        async with shelf.exclusive("jobs", "run", wait=30) as held:
            assert held
            done.append(i)

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(64))), 30)
    assert sorted(done) == list(range(64))


def _planted(tmp_path: Path, shelf: notes.Notes) -> Path:
    folder = tmp_path / ".runner-agent" / "notes" / "team"
    [note] = [p for p in folder.iterdir() if not p.name.startswith("lock-")]
    return note


@pytest.mark.parametrize("how", ["loose bits", "two links", "dated ahead", "another uid"])
async def test_a_note_not_the_agents_own_is_not_read_and_is_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "another uid" and os.geteuid() != 0:
        pytest.skip("needs root to give a file to another uid")
    shelf = make(tmp_path)
    await shelf.write("team", "a@1:f", b"text")
    note = _planted(tmp_path, shelf)
    if how == "loose bits":  # a folder once loosened: job code could have written it
        note.chmod(0o644)
    elif how == "two links":
        os.link(note, tmp_path / "hardlink")
    elif how == "dated ahead":  # would never grow old, nor be swept
        ahead = time.time() + 10 * 365 * 86400
        os.utime(note, (ahead, ahead))
    else:
        os.chown(note, 1001, 1001)
    assert await shelf.read("team", "a@1:f", max_age=60) is None
    monkeypatch.setattr(notes, "SWEEP_EVERY", 0.0)
    await shelf.write("team", "other", b"x")
    assert not note.exists()


class Hanging(locks.PosixLocks):
    """A lock backend on a sick volume: every attempt hangs."""

    def hold(self, path: Path, *, what: str, timeout: float) -> Any:
        inner = super().hold(path, what=what, timeout=timeout)

        class Slow:
            def __enter__(self) -> None:
                time.sleep(2)
                inner.__enter__()

            def __exit__(self, *exc: object) -> None:
                inner.__exit__(*exc)

        return Slow()


async def test_a_hanging_lock_attempt_is_bounded_by_the_wait(tmp_path: Path) -> None:
    shelf = notes.Notes(layout.Store(tmp_path), Hanging())
    began = time.monotonic()
    async with shelf.exclusive("jobs", "run", wait=0.2) as held:
        assert held is False
    assert time.monotonic() - began < 1.5


async def test_a_cancelled_holder_lets_go(tmp_path: Path) -> None:
    shelf = make(tmp_path)
    inside = asyncio.Event()

    async def holder() -> None:
        async with shelf.exclusive("jobs", "run", wait=5) as held:
            assert held
            inside.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(holder())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with make(tmp_path).exclusive("jobs", "run", wait=2) as held:
        assert held is True


async def test_a_waiter_leaves_when_the_answer_is_ready(tmp_path: Path) -> None:
    shelf = make(tmp_path)
    asked = 0

    async def ready() -> bool:
        nonlocal asked
        asked += 1
        return asked >= 2

    async with shelf.exclusive("jobs", "run", wait=5):
        began = time.monotonic()
        async with make(tmp_path).exclusive("jobs", "run", wait=10, ready=ready) as held:
            assert held is False
        assert time.monotonic() - began < 3


HOLD = """
import sys, time
from pathlib import Path
from agent.store import locks
with locks.PosixLocks().hold(Path(sys.argv[1]), what="the test", timeout=5):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


async def test_another_process_holding_the_lock_is_waited_for(tmp_path: Path) -> None:
    # Agents are processes: the lock must exclude across them, not only across tasks.
    shelf = make(tmp_path)
    await shelf.write("jobs", "seed", b"x")  # the folder exists
    shard = int(notes._name("run")[:8], 16) % notes.SHARDS
    path = tmp_path / ".runner-agent" / "notes" / "jobs" / f"lock-{shard:04d}"
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD, str(path), "1.5", stdout=asyncio.subprocess.PIPE
    )
    assert other.stdout is not None
    assert await asyncio.wait_for(other.stdout.readline(), 20) == b"held\n"
    async with shelf.exclusive("jobs", "run", wait=0.3) as held:
        assert held is False
    async with shelf.exclusive("jobs", "run", wait=10) as held:
        assert held is True
    assert await other.wait() == 0
