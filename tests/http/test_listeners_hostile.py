"""The listeners against hostile clients, on a real agent over real sockets: a flood of
idle connections, a slowloris, the per-listener cap closing the idle-longest first."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.http.test_ensure_api import ARCHIVE, BODY, ensure
from tests.support import fixtures
from tests.support.agentproc import PYTHON, Agent, Starter, http_get
from tests.support.server import Reply, Server

FLOOD = 3000
AGENT_NOFILE = 2048
"""The agent's hard open-files limit in the flood test: below the flood, so the old
agent ran out of descriptors."""


def start_with_open_files(starter: Starter, config: dict[str, Any], limit: int) -> Agent:
    """Start the real agent as Starter does, with RLIMIT_NOFILE (soft and hard) lowered
    to ``limit`` in the agent's process only (lowering needs no privilege)."""
    path = starter.write_config(config, name="nofile.yaml")
    log = starter.workdir / "nofile.log"
    launcher = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit})); "
        f"sys.argv = ['runner-agent', 'serve', '--config', {str(path)!r}]; "
        "runpy.run_module('agent', run_name='__main__', alter_sys=True)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_AGENT_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-c", launcher], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    agent = Agent(
        proc=proc,
        port=int(config["server"]["metrics_address"].rsplit(":", 1)[1]),
        socket=Path(config["server"]["socket_path"]),
        config=path,
        log=log,
    )
    starter.agents.append(agent)  # stopped (by PID) with the others
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=20, what="ready")
    return agent


def healthz_seconds(agent: Agent) -> float:
    start = time.perf_counter()
    status, _ = http_get(agent.base + "/healthz", timeout=5)
    assert status == 200
    return time.perf_counter() - start


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_healthz_answers_while_thousands_of_idle_connections_are_held(
    start_agent: Starter, http_server: Server
) -> None:
    fixtures.archive_catalog(start_agent.workdir / "catalog", "tool", BODY)
    config = start_agent.base_config()
    config["catalog"] = {"paths": [str(start_agent.workdir / "catalog")]}
    config["cache"] = {"root": str(start_agent.workdir / "store")}
    config["installer"] = {"mirrors": {"https://example.invalid/": http_server.url("/x/")}}
    http_server.route(ARCHIVE, Reply(body=BODY))
    agent = start_with_open_files(start_agent, config, AGENT_NOFILE)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = FLOOD + 512  # the flood, and this process's own
    if soft < needed:
        assert hard >= needed, f"this test needs ulimit -n >= {needed} (hard limit {hard})"
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    held: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            held.append(socket.create_connection(("127.0.0.1", agent.port), timeout=5))
        worst = max(healthz_seconds(agent) for _ in range(20))
        assert worst < 2.0, f"/healthz took {worst:.2f} s with {FLOOD} idle connections"
        # The agent still has descriptors for its own work: an install (a download, a
        # lock, files in the store) succeeds while the flood is held.
        status, events = await ensure(agent, {"requests": ["tool"]})
        assert status == 200
        assert events[-1]["ok"] is True, events
    finally:
        for sock in held:
            sock.close()
    assert "Too many open files" not in agent.logs()
    assert "out of system resource" not in agent.logs()


def test_a_slowloris_and_an_idle_connection_are_dropped(start_agent: Starter) -> None:
    agent = start_agent.start(
        start_agent.base_config(header_timeout_seconds=1, idle_timeout_seconds=2)
    )
    idle = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
    slow = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
    start = time.monotonic()
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n")
    dropped = None
    with contextlib.suppress(OSError):
        while time.monotonic() - start < 10:
            slow.sendall(b"X-Trickle: 1\r\n")  # a header every 0.2 s, never the end
            if closed_by_server(slow, 0.2):
                dropped = time.monotonic() - start
                break
    dropped = dropped or time.monotonic() - start
    assert dropped < 3.0, f"a slowloris held its connection for {dropped:.1f} s"
    assert closed_by_server(idle, 5.0), "an idle connection outlived idle_timeout_seconds"
    assert time.monotonic() - start < 5.0
    assert healthz_seconds(agent) < 1.0
    slow.close()
    idle.close()


def _unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    return sock


def _response(sock: socket.socket) -> tuple[int, Any]:
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), json.loads(rest[:length])


def test_past_the_cap_the_connections_idle_longest_are_closed_first(
    start_agent: Starter,
) -> None:
    agent = start_agent.start(start_agent.base_config(max_connections=16))
    # One busy connection first (the oldest): its body is still arriving.
    busy = _unix(agent.socket)
    busy.sendall(
        b"POST /v1/reload HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n\r\n{"
    )
    time.sleep(0.3)
    idle = []
    for _ in range(15):
        idle.append(_unix(agent.socket))
        time.sleep(0.02)  # accepted in this order
    time.sleep(0.3)
    newer = []
    for _ in range(4):
        newer.append(_unix(agent.socket))
        time.sleep(0.02)
    try:
        assert all(closed_by_server(s, 2.0) for s in idle[:4]), "the idle-longest stayed"
        assert not any(closed_by_server(s, 0.05) for s in idle[4:]), "a newer idle one went"
        for sock in newer:  # the new ones are served
            sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: agent\r\n\r\n")
            assert _response(sock)[0] == 200
        busy.sendall(b"}")  # the busy one was never chosen
        status, body = _response(busy)
        assert status == 200, body
    finally:
        for sock in [busy, *idle, *newer]:
            sock.close()


@pytest.mark.parametrize("listener", ["probe", "api"])
async def test_every_listener_still_serves_keep_alive_clients(
    start_agent: Starter, listener: str
) -> None:
    agent = start_agent.start(start_agent.base_config())
    connector: aiohttp.BaseConnector = (
        aiohttp.TCPConnector(limit=1)
        if listener == "probe"
        else aiohttp.UnixConnector(path=str(agent.socket), limit=1)
    )
    url = agent.base + "/healthz" if listener == "probe" else "http://agent/v1/status"
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(50):  # one connection, reused
            async with session.get(url) as resp:
                assert resp.status == 200
                await resp.read()
