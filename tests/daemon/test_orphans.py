"""kill -9 of a real agent mid-install: its install worker, the commands that worker runs
and multiprocessing's resource tracker go with it, the install it was running is never
published, and the next agent on the same store installs it afresh."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support import fixtures, proctree
from tests.support.agentproc import Starter
from tests.support.server import Reply, Server

BODY = fixtures.tar_gz({"bin/tool": (b"#!/bin/sh\necho tool 1.0.0\n", 0o755)}, top="tool-1.0.0")
ARCHIVE = "/x/tool-1.0.0.tar.gz"
HELD = 4.0
"""Seconds the server holds the download before it answers: the worker is busy then."""


async def _ensure(socket: Path) -> dict[str, Any]:
    """The last line of the ensure stream ({} if the agent went away first)."""
    last: dict[str, Any] = {}
    connector = aiohttp.UnixConnector(path=str(socket))
    with contextlib.suppress(aiohttp.ClientError):
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post("http://agent/v1/ensure", json={"requests": ["tool"]}) as resp,
        ):
            async for line in resp.content:
                if line.strip():
                    last = json.loads(line)
    return last


def _script_catalog(folder: Path, body: str) -> None:
    data = {
        "id": "tool",
        "name": "Tool",
        "versions": ["1.0.0"],
        "platforms": ["linux"],
        "toolcache_name": "tool",
        "install": [{"method": "script", "platforms": ["linux"], "script": "install.sh"}],
        "env": {"path": ["bin"]},
    }
    (folder / "tool").mkdir(parents=True)
    (folder / "tool" / "feature.yaml").write_text(yaml.safe_dump(data))
    (folder / "tool" / "install.sh").write_text(body)


async def _until(predicate: object, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_kill_9_mid_install_leaves_no_worker_and_publishes_nothing(
    start_agent: Starter, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY, delay=HELD), Reply(body=BODY))
    fixtures.archive_catalog(start_agent.workdir / "catalog", "tool", BODY)
    store = start_agent.workdir / "store"
    config = start_agent.base_config()
    config["catalog"] = {"paths": [str(start_agent.workdir / "catalog")]}
    config["cache"] = {"root": str(store)}
    config["installer"] = {"mirrors": {"https://example.invalid/": http_server.url("/x/")}}
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")

    request = asyncio.create_task(_ensure(agent.socket))
    below: list[proctree.Proc] = []
    try:
        # The worker is inside the download, which the server holds.
        await _until(lambda: http_server.count(ARCHIVE) == 1, timeout=20, what="the download")
        below = proctree.descendants(agent.proc.pid)
        cmdlines = [p.cmdline for p in below]
        assert any("spawn_main" in c for c in cmdlines), cmdlines
        assert any("resource_tracker" in c for c in cmdlines), cmdlines
        killed = time.monotonic()
        agent.proc.kill()
        agent.proc.wait(timeout=10)
        left = proctree.survivors(below, within=5.0)
        assert not left, f"still running after the agent's kill -9: {left}"
        await request

        # Past the moment the server answers (and a worker could have finished): nothing
        # was published.
        await asyncio.sleep(max(0.0, HELD + 1.0 - (time.monotonic() - killed)))
        assert not list(store.glob("**/*.complete"))
        assert not (store / "tool").exists()

        # What the killed install left (its staging, its lock) holds up no one.
        again = start_agent.start(config)
        again.wait_for(lambda: again.get("/readyz")[0] == 200, what="ready")
        result = await _ensure(again.socket)
        assert result["ok"] is True
        assert result["features"][0]["result"] == "installed"
        assert http_server.count(ARCHIVE) == 2
    finally:
        proctree.kill(below)
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request


async def test_kill_9_mid_script_ends_the_command_the_worker_runs(start_agent: Starter) -> None:
    marker = uuid.uuid4().hex
    body = f'set -eu\n(exec -a held-{marker} sleep 300)\nmkdir -p "$PREFIX/bin"\n'
    _script_catalog(start_agent.workdir / "catalog", body)
    store = start_agent.workdir / "store"
    config = start_agent.base_config()
    config["catalog"] = {"paths": [str(start_agent.workdir / "catalog")]}
    config["cache"] = {"root": str(store)}
    # Unconfined, so that this is about the worker and its command, not the sandbox.
    config["installer"] = {"script_isolation": "none"}
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")

    request = asyncio.create_task(_ensure(agent.socket))
    below: list[proctree.Proc] = []
    try:

        def held() -> bool:
            return any(marker in p.cmdline for p in proctree.descendants(agent.proc.pid))

        await _until(held, timeout=20, what="the script's command")
        below = proctree.descendants(agent.proc.pid)
        agent.proc.kill()
        agent.proc.wait(timeout=10)
        left = proctree.survivors(below, within=5.0)
        assert not left, f"still running after the agent's kill -9: {left}"
        await request
        assert not list(store.glob("**/*.complete"))
    finally:
        proctree.kill(below)
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request
