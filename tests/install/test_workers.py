"""The real worker pool, owned by a real process: its workers die when that process is
killed with SIGKILL (and publish nothing), and they collect garbage even when the main
module they re-import paused the collector."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.support import fixtures, proctree
from tests.support.server import Reply, Server

BODY = fixtures.tar_gz({"bin/tool": (b"#!/bin/sh\necho tool 1.0.0\n", 0o755)}, top="tool-1.0.0")
ARCHIVE = "/x/tool-1.0.0.tar.gz"
HELD = 4.0
"""Seconds the server holds the download before it answers: the worker is busy then."""
ROOT = Path(__file__).resolve().parents[2]

# The pool's owner, run as a script file: spawn re-imports a script (as __mp_main__) in
# every worker, as it re-imports the agent's main module, and this one pauses the
# collector at import, as ``serve`` does at startup.
OWNER = textwrap.dedent(
    """
    import gc
    gc.disable()

    if __name__ == "__main__":
        import asyncio, json, sys
        from pathlib import Path
        from agent.install import protocol, workers
        from agent.install.fetch import downloads
        from tests.support import fixtures

        mode, folder, base = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
        pool = workers.WorkerPool(1)
        if mode == "gc":
            # The pool has no call for this; its executor is the worker as-is.
            print(json.dumps(pool._started().submit(gc.isenabled).result(timeout=60)))
            pool.close()
            sys.exit(0)
        body = (folder / "body").read_bytes()
        catalog = fixtures.archive_catalog(folder / "catalog", "tool", body)
        plan = fixtures.plan_for(catalog, "tool", folder / "store")
        step = {**plan["features"][0], "platform": plan["platform"]}
        mirrors = (("https://example.invalid/", base + "/x/"),)
        options = protocol.Options(
            lock_timeout=60, policy=downloads.Policy(mirrors=mirrors, stall_timeout=30.0)
        )

        async def main():
            await pool.install(
                str(folder / "store"), step, lock=("posix", 30.0),
                options=options, listener=lambda event, data: None,
            )

        asyncio.run(main())
    """
)


def _owner(tmp_path: Path, mode: str, base: str) -> subprocess.Popen[str]:
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    (tmp_path / "body").write_bytes(BODY)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), mode, str(tmp_path), base],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_a_worker_dies_with_the_process_that_owns_its_pool(
    tmp_path: Path, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY, delay=HELD))
    owner = _owner(tmp_path, "install", http_server.url(""))
    below: list[proctree.Proc] = []
    try:
        deadline = time.monotonic() + 30
        while http_server.count(ARCHIVE) < 1:  # the worker is inside the download
            assert owner.poll() is None, "the pool's owner exited early"
            assert time.monotonic() < deadline, "the worker never started its download"
            time.sleep(0.05)
        below = proctree.descendants(owner.pid)
        workers = [p for p in below if "spawn_main" in p.cmdline]
        assert workers, [p.cmdline for p in below]
        killed = time.monotonic()
        owner.kill()
        owner.wait(timeout=10)
        assert not proctree.survivors(below, within=5.0)
        # Past the moment the server answers: the install was not published.
        time.sleep(max(0.0, HELD + 1.0 - (time.monotonic() - killed)))
        assert not list((tmp_path / "store").glob("**/*.complete"))
    finally:
        proctree.kill(below)
        if owner.poll() is None:
            owner.kill()
        owner.communicate(timeout=10)


def test_a_worker_collects_garbage_though_its_main_module_paused_it(tmp_path: Path) -> None:
    owner = _owner(tmp_path, "gc", "http://127.0.0.1:1")
    out, _ = owner.communicate(timeout=60)
    assert owner.returncode == 0
    assert out.strip() == "true"
