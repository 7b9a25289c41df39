"""Reliability across processes: a race to one entry, SIGKILL at random points, a full
disk, and the real @actions/tool-cache lookup reading our store."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.install import plans, protocol
from agent.store import entries, layout
from tests.support import fixtures
from tests.support.server import Server, ok


# One process that ensures node from the test server into a store and prints its receipt.
def test_twelve_processes_race_and_one_downloads(tmp_path: Path, http_server: Server) -> None:
    tarball = fixtures.serve_node(http_server)
    barrier = time.time() + 3.0  # every process imported and waiting before the gun
    procs = [fixtures.spawn(tmp_path, http_server, barrier) for _ in range(12)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.splitlines()[-1]))
    assert http_server.count(tarball) == 1
    assert len({o["created"] for o in outputs}) == 1  # all see the one receipt


def _invariants(store: Path) -> None:
    """Never a marker without a complete entry; never a visible partial entry."""
    entry = layout.Store(store).entry("node", "20.11.1", "x64")
    if entry.marker.exists():
        assert (entry.path / "bin" / "node").is_file()
        assert entry.receipt.exists()
        assert entries.lookup(entry, feature="node", version="20.11.1") is not None


def test_sigkill_at_random_points_never_corrupts(tmp_path: Path, http_server: Server) -> None:
    fixtures.serve_node(http_server)
    rng = random.Random(1234)  # noqa: S311 - a fixed seed, so a failure can be replayed
    trials = int(os.environ.get("RA_TEST_KILL_TRIALS", "30"))
    for trial in range(trials):
        store = tmp_path / f"s{trial}"
        proc = fixtures.spawn(store, http_server, 0)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "go"  # imported and planned: installing now
        time.sleep(rng.uniform(0.0, 0.15))  # an install here takes about 0.1-0.2 s
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        _invariants(store)
        done = fixtures.ensure_node(store, http_server)  # the next ensure succeeds
        assert done.installed[0].entry.marker.exists()
        _invariants(store)
        assert not list((store / ".runner-agent" / "staging").iterdir())  # swept
        shutil.rmtree(store)


@pytest.mark.usefixtures("needs_root")
def test_a_full_disk_is_a_clear_error_and_the_store_still_serves(
    tmp_path: Path, http_server: Server
) -> None:
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        fixtures.serve_node(http_server)
        fixtures.ensure_node(mount, http_server)  # small: fits
        # Small to download, too big to unpack: the disk fills during extraction.
        big = fixtures.tar_gz(
            {"bin/tool": (os.urandom(700 * 1024), 0o755), "zeros": (bytes(2 * 1024 * 1024), 0o644)}
        )
        catalog = fixtures.archive_catalog(tmp_path / "cat", "big", big)
        http_server.route("/x/big-1.0.0.tar.gz", ok(big))
        with pytest.raises(protocol.InstallError) as info:
            plans.ensure_plan(
                layout.Store(mount),
                fixtures.plan_for(catalog, "big", mount),
                options=fixtures.options(http_server),
            )
        assert info.value.step == "extract"
        assert "No space left on device" in str(info.value)
        assert not (mount / "big").exists()
        again = fixtures.ensure_node(mount, http_server)
        assert again.installed[0].cached
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_actions_tool_cache_finds_our_entry(
    tmp_path: Path, http_server: Server, tool_cache_module: Path
) -> None:
    fixtures.serve_node(http_server)
    [done] = fixtures.ensure_node(tmp_path / "store", http_server).installed
    script = tool_cache_module / "find.mjs"
    script.write_text(
        "import * as tc from '@actions/tool-cache';\n"
        "console.log(JSON.stringify({found: tc.find('node', '20', 'x64'),"
        " versions: tc.findAllVersions('node', 'x64')}));\n"
    )
    env = {
        **os.environ,
        "RUNNER_TOOL_CACHE": str(tmp_path / "store"),
        "RUNNER_TEMP": str(tmp_path),
    }
    proc = subprocess.run(
        ["node", str(script)],
        cwd=tool_cache_module,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print("tool-cache find():", result)
    assert result["found"] == str(done.entry.path)
    assert result["versions"] == ["20.11.1"]


HOLD_ENTRY_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agent.store import layout, locks
    entry = layout.Store(Path(sys.argv[1])).entry("node", "20.11.1", "x64")
    layout.Store(Path(sys.argv[1])).open()
    with locks.PosixLocks().hold(entry.lock, what="node", timeout=5):
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_a_killed_lock_holder_lets_the_waiter_install_once(
    tmp_path: Path, http_server: Server
) -> None:
    tarball = fixtures.serve_node(http_server)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_ENTRY_LOCK, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    waiter = fixtures.spawn(tmp_path, http_server, 0)
    time.sleep(1.0)
    assert waiter.poll() is None  # waiting on the lock
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    _, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert http_server.count(tarball) == 1
