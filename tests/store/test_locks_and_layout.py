"""Store layout, format versions and locks across real processes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.store import layout, locks


def test_a_new_store_gets_its_format(tmp_path: Path) -> None:
    store = layout.Store(tmp_path)
    store.open()
    assert (tmp_path / ".runner-agent" / "format").read_text() == "1\n"
    for name in ("locks", "receipts", "staging", "downloads"):
        assert (tmp_path / ".runner-agent" / name).is_dir()
    store.open()  # idempotent


def test_a_newer_format_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / ".runner-agent").mkdir()
    (tmp_path / ".runner-agent" / "format").write_text("2\n")
    with pytest.raises(layout.FormatError, match="format 2, newer than this agent's 1"):
        layout.Store(tmp_path).open()


def test_entries_follow_the_tool_cache_layout(tmp_path: Path) -> None:
    entry = layout.Store(tmp_path).entry("node", "20.11.1", "x64")
    assert entry.path == tmp_path / "node" / "20.11.1" / "x64"
    assert entry.marker == tmp_path / "node" / "20.11.1" / "x64.complete"
    with pytest.raises(layout.StoreError):
        layout.Store(tmp_path).entry("..", "1", "x64")


HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agent.store import locks
    with locks.PosixLocks().hold(Path(sys.argv[1]), what="x", timeout=5):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def holder(lock: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def finish(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def test_a_lock_excludes_another_process_and_names_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "e.lock"
    proc = holder(lock, 30)
    try:
        guard = locks.PosixLocks(poll=0.02)
        with (
            pytest.raises(locks.LockTimeout) as info,
            guard.hold(lock, what="node 20.11.1", timeout=0.3),
        ):
            pass
        assert f"locked by host {os.uname().nodename} pid {proc.pid}" in str(info.value)
    finally:
        finish(proc)


def test_a_killed_holder_frees_the_lock_at_once(tmp_path: Path) -> None:
    lock = tmp_path / "e.lock"
    proc = holder(lock, 30)
    start = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    with locks.PosixLocks(poll=0.02).hold(lock, what="x", timeout=5):
        assert time.monotonic() - start < 1.0


def test_a_waiter_reports_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.store.locks")
    lock = tmp_path / "e.lock"
    proc = holder(lock, 0.6)
    with locks.PosixLocks(poll=0.02, report_every=0.2).hold(lock, what="node 20.11.1", timeout=5):
        pass
    finish(proc)
    assert "waiting for node 20.11.1, locked by host" in caplog.text


def _count_overlaps(lock: str, shared: str, rounds: int) -> None:
    guard = locks.PosixLocks(poll=0.005)
    for _ in range(rounds):
        with guard.hold(Path(lock), what="x", timeout=30):
            flag = Path(shared)
            if flag.exists():
                Path(shared + ".overlap").touch()
            flag.touch()
            time.sleep(0.002)
            flag.unlink()


def test_processes_never_overlap_inside_the_lock(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_count_overlaps, args=(str(tmp_path / "l"), str(tmp_path / "in"), 20))
        for _ in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    assert not (tmp_path / "in.overlap").exists()


def test_the_staging_folder_is_the_agents_alone(tmp_path: Path) -> None:
    store = layout.Store(tmp_path / "store")
    store.prepare()
    assert stat.S_IMODE(store.staging.stat().st_mode) == 0o700
    store.staging.chmod(0o755)  # an older agent's store
    store.prepare()
    assert stat.S_IMODE(store.staging.stat().st_mode) == 0o700
