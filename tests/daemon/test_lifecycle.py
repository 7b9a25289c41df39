"""Startup modes, stale sockets, graceful drain and forced exit of the real daemon."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.agentproc import Starter, free_port


async def test_sigterm_drains_a_slow_request_then_exits_0(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config(shutdown_grace_seconds=10))
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    sent_term = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"reason": "'
        await asyncio.sleep(0.3)  # the request is in the agent's hands before the signal
        agent.signal(signal.SIGTERM)
        sent_term.set()
        for _ in range(8):
            await asyncio.sleep(0.15)
            yield b"slow"
        yield b'"}'

    async def readiness_during_drain() -> tuple[int, dict]:  # type: ignore[type-arg]
        await sent_term.wait()
        await asyncio.sleep(0.3)
        return await asyncio.to_thread(agent.get, "/readyz")

    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def upload() -> tuple[int, dict]:  # type: ignore[type-arg]
            async with session.post(
                "http://agent/v1/reload",
                data=slow_body(),
                headers={"Content-Type": "application/json"},
            ) as resp:
                return resp.status, await resp.json()

        (status, body), (ready_status, ready) = await asyncio.gather(
            upload(), readiness_during_drain()
        )
    assert status == 200, body
    assert body["generation"] == 2
    assert ready_status == 503
    assert {c["name"]: c["ok"] for c in ready["conditions"]}["lifecycle"] is False
    assert await asyncio.to_thread(agent.wait, 15) == 0
    assert not agent.socket.exists()
    assert "stopped after draining" in agent.logs()


def test_a_second_signal_exits_at_once(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config(shutdown_grace_seconds=30))
    agent.wait_for(lambda: agent.socket.exists(), what="socket")
    # An idle keep-alive upload that never finishes keeps the drain waiting.
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(agent.socket))
    client.sendall(
        b"POST /v1/reload HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    time.sleep(0.2)
    agent.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert agent.proc.poll() is None  # still draining
    started = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.wait(10) == 0
    assert time.monotonic() - started < 3
    assert "exiting now without draining" in agent.logs()
    client.close()


def test_an_idle_agent_stops_promptly(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    started = time.monotonic()
    agent.signal(signal.SIGINT)
    assert agent.wait(10) == 0
    assert time.monotonic() - started < 3


def test_a_bad_config_exits_2_with_one_line(start_agent: Starter) -> None:
    path = start_agent.write_config("server:\n  metrics_address: nowhere\n")
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"runner-agent: invalid configuration: {path}:2:3: server.metrics_address"
    )


def test_degrade_serves_probes_and_holds_readiness_false_until_fixed(start_agent: Starter) -> None:
    config = start_agent.base_config(config_poll_seconds=0.1)
    good = json.loads(json.dumps(config))
    path = start_agent.write_config("logging:\n  level: [\n")
    # The probe address comes from the environment, so it survives the broken file.
    agent = start_agent.start(
        config_path=path,
        args=["--on-config-error", "degrade"],
        env={
            "RUNNER_AGENT_SERVER__METRICS_ADDRESS": config["server"]["metrics_address"],
            "RUNNER_AGENT_SOCKET": config["server"]["socket_path"],
        },
        port=int(config["server"]["metrics_address"].rsplit(":", 1)[1]),
        socket_path=start_agent.workdir / "api1.sock",
    )
    status, body = agent.get("/readyz")
    assert status == 503
    cond = {c["name"]: c for c in body["conditions"]}["config"]
    assert cond["ok"] is False
    assert "invalid YAML" in cond["message"]
    assert str(path) in cond["message"]
    assert agent.get("/healthz")[0] == 200
    assert agent.metric('runner_agent_condition{condition="config"}') == 0.0
    path.write_text(json.dumps(good))
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready after the fix")


def test_degrade_is_also_chosen_by_environment(start_agent: Starter) -> None:
    port = free_port()
    path = start_agent.write_config("nonsense: true\n")
    agent = start_agent.start(
        config_path=path,
        env={
            "RUNNER_AGENT_ON_CONFIG_ERROR": "degrade",
            "RUNNER_AGENT_SERVER__METRICS_ADDRESS": f"127.0.0.1:{port}",
            "RUNNER_AGENT_SOCKET": str(start_agent.workdir / "d.sock"),
        },
        port=port,
        socket_path=start_agent.workdir / "d.sock",
    )
    assert agent.get("/readyz")[0] == 503


def test_a_stale_socket_is_replaced(start_agent: Starter) -> None:
    config = start_agent.base_config()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(config["server"]["socket_path"])
    stale.close()  # bound, never listening: what a SIGKILLed agent leaves behind
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")


def test_a_live_socket_is_never_stolen(start_agent: Starter) -> None:
    first = start_agent.start(start_agent.base_config())
    first.wait_for(lambda: first.get("/readyz")[0] == 200, what="first ready")
    config = start_agent.base_config()
    config["server"]["socket_path"] = str(first.socket)
    second = start_agent.start(config)
    second.wait_for(
        lambda: "already serving the API" in str(second.get("/readyz")[1]),
        what="second refusing to steal the socket",
    )
    assert second.get("/readyz")[0] == 503
    assert first.get("/readyz")[0] == 200
    first.signal(signal.SIGTERM)  # the second keeps retrying and takes over once it is gone
    assert first.wait(10) == 0
    second.wait_for(lambda: second.get("/readyz")[0] == 200, timeout=40, what="takeover")


def test_an_unusable_socket_folder_is_retried_while_probes_serve(start_agent: Starter) -> None:
    blocker = start_agent.workdir / "not-a-dir"
    blocker.write_text("")
    config = start_agent.base_config()
    config["server"]["socket_path"] = str(blocker / "api.sock")
    agent = start_agent.start(config, wait_socket=False)
    _status, body = agent.wait_for(
        lambda: (r := agent.get("/readyz"))[0] == 503 and "retrying" in str(r[1]) and r,
        what="api failing",
    )
    api = {c["name"]: c for c in body["conditions"]}["api"]
    assert "set server.socket_path" in api["message"]
    assert agent.get("/healthz")[0] == 200


def test_a_taken_probe_port_is_retried_until_it_frees(start_agent: Starter) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    config = start_agent.base_config()
    config["server"]["metrics_address"] = f"127.0.0.1:{port}"
    agent = start_agent.start(config, wait_ready=False)
    agent.wait_for(
        lambda: f"cannot listen on 127.0.0.1:{port}" in agent.logs(), what="the bind error"
    )
    assert agent.proc.poll() is None  # exiting would get the pod deleted
    holder.close()
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=30, what="ready")


def test_sigterm_while_the_port_is_taken_exits_0(start_agent: Starter) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    config = start_agent.base_config()
    config["server"]["metrics_address"] = f"127.0.0.1:{holder.getsockname()[1]}"
    agent = start_agent.start(config, wait_ready=False)
    agent.wait_for(lambda: "cannot listen" in agent.logs(), what="the bind error")
    agent.signal(signal.SIGTERM)
    assert agent.wait(10) == 0
    holder.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_startup_is_never_fatal(start_agent: Starter, sig: signal.Signals) -> None:
    config = start_agent.base_config()
    agent = start_agent.start(config, wait_ready=False)
    time.sleep(0.25)  # importing (that takes ~0.3 s): before the loop's handlers exist
    agent.signal(sig)
    if sig == signal.SIGTERM:
        assert agent.wait(15) == 0
    else:
        agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=20, what="ready")
        assert agent.proc.poll() is None
