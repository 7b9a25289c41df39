"""The lease lock backend, for volumes without cross-client locks: the same race and
SIGKILL checks as the fcntl backend, with leases that go stale."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from agent.install import plans
from agent.store import layout, locks
from tests.support import fixtures
from tests.support.server import Server

TTL = 0.6


def test_a_lease_excludes_and_names_its_holder(tmp_path: Path) -> None:
    lock = tmp_path / "e.lock"
    first = locks.LeaseLocks(ttl=5, poll=0.02)
    second = locks.LeaseLocks(ttl=5, poll=0.02)
    with (
        first.hold(lock, what="x", timeout=1),
        pytest.raises(locks.LockTimeout, match=f"leased by host .* pid {os.getpid()}"),
        second.hold(lock, what="node", timeout=0.2),
    ):
        pass
    with first.hold(lock, what="x", timeout=1):  # released: free again
        pass


def test_a_live_holder_keeps_its_lease_past_the_ttl(tmp_path: Path) -> None:
    lock = tmp_path / "e.lock"
    with locks.LeaseLocks(ttl=0.9, poll=0.02).hold(lock, what="x", timeout=1):
        time.sleep(2.0)  # over two lease times: only the heartbeat keeps it
        other = locks.LeaseLocks(ttl=0.9, poll=0.02)
        with pytest.raises(locks.LockTimeout), other.hold(lock, what="y", timeout=1.0):
            pass


def test_twelve_processes_race_and_one_downloads(tmp_path: Path, http_server: Server) -> None:
    tarball = fixtures.serve_node(http_server)
    barrier = time.time() + 3.0
    procs = [fixtures.spawn(tmp_path, http_server, barrier, lease=TTL) for _ in range(12)]
    created = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        created.add(json.loads(out.splitlines()[-1])["created"])
    assert http_server.count(tarball) == 1
    assert len(created) == 1


def test_a_killed_holder_goes_stale_and_the_next_install_succeeds(
    tmp_path: Path, http_server: Server
) -> None:
    fixtures.serve_node(http_server)
    for trial in range(10):
        store = tmp_path / f"s{trial}"
        proc = fixtures.spawn(store, http_server, 0, lease=TTL)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "go"
        time.sleep(0.01 * trial)  # from before the lease to after the marker
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        start = time.monotonic()
        done = plans.ensure_plan(
            layout.Store(store),
            fixtures.node_plan(store),
            options=fixtures.options(http_server),
            lock_backend=locks.LeaseLocks(ttl=TTL, poll=0.02),
        )
        assert done.installed[0].entry.marker.exists()
        # A lease the dead child left delays this install by about its lifetime at most.
        assert time.monotonic() - start < TTL * 3 + 2


def test_a_stale_lease_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "e.lock"
    lease = lock.with_name(lock.name + ".lease")
    lease.write_text(json.dumps({"host": "gone", "pid": 1, "token": "t", "expires": 0}))
    old = time.time() - 60
    os.utime(lease, (old, old))
    start = time.monotonic()
    with locks.LeaseLocks(ttl=TTL, poll=0.02).hold(lock, what="x", timeout=5):
        assert time.monotonic() - start < 1
    assert not lease.exists()
    assert not list(tmp_path.glob("*.stale-*"))
