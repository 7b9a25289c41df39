"""Big, deep and abandoned request bodies, against a real agent over its real sockets:
refused cheaply as 400 naming the limit, never a 500, /healthz fast meanwhile; a client
that disconnects mid-body is a 499 in the metrics, not an error in the log."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from typing import Any

import aiohttp
import pytest

from tests.support.agentproc import Agent, Starter, http_get

TARGET = {"os": "linux", "arch": "x64", "libc": "glibc"}


@pytest.fixture
def agent(start_agent: Starter) -> Agent:
    running = start_agent.start(start_agent.base_config())
    running.wait_for(lambda: running.get("/readyz")[0] == 200, what="ready")
    return running


async def post(agent: Agent, path: str, body: bytes) -> tuple[int, Any, float]:
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    start = time.perf_counter()
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"http://agent{path}", data=body, headers={"Content-Type": "application/json"}
        ) as resp,
    ):
        text = await resp.text()
        answer = json.loads(text) if resp.content_type == "application/json" else text
        return resp.status, answer, time.perf_counter() - start


async def healthz_while(agent: Agent, work: asyncio.Future[Any]) -> float:
    """The slowest /healthz round trip while ``work`` runs."""
    worst = 0.0
    async with aiohttp.ClientSession() as session:
        while not work.done():
            start = time.perf_counter()
            async with session.get(agent.base + "/healthz") as resp:
                assert resp.status == 200
                await resp.read()
            worst = max(worst, time.perf_counter() - start)
            await asyncio.sleep(0.01)
    return worst


async def test_a_team_of_40000_features_is_a_quick_400_and_healthz_stays_fast(
    agent: Agent,
) -> None:
    features = ",".join(f'"tool{i}@1"' for i in range(40_000))
    body = f'{{"target": {_json(TARGET)}, "team": {{"features": [{features}]}}}}'.encode()
    assert len(body) < 1024 * 1024  # under the body limit: the cap is what refuses it
    work = asyncio.ensure_future(
        asyncio.gather(post(agent, "/v1/plan", body), post(agent, "/v1/plan", body))
    )
    worst = await healthz_while(agent, work)
    for status, answer, seconds in await work:
        assert status == 400, answer
        assert "over the limit of 256" in answer["error"]["message"]
        assert answer["error"]["details"] == {"limit": 256}
        assert seconds < 2.0
    assert worst < 0.5, f"/healthz took {worst:.2f} s while the big plans were refused"


@pytest.mark.parametrize("path", ["/v1/plan", "/v1/ensure", "/v1/reload"])
async def test_deep_nesting_is_a_400_naming_the_limit(agent: Agent, path: str) -> None:
    status, answer, _ = await post(agent, path, b"[" * 10_000 + b"]" * 10_000)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_json"
    assert "over the limit of 32 levels" in answer["error"]["message"]
    # Inside a string, brackets are text, not nesting.
    status, answer, _ = await post(agent, path, b'{"labels": ["' + b"[" * 5000 + b'"]}')
    assert status != 500
    assert "levels" not in str(answer)


@pytest.mark.parametrize("path", ["/v1/plan", "/v1/ensure"])
async def test_a_100000_digit_integer_is_a_400_naming_the_limit(agent: Agent, path: str) -> None:
    body = b'{"labels": [' + b"7" * 100_000 + b"]}"
    status, answer, _ = await post(agent, path, body)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_json"
    assert "over 4300 digits" in answer["error"]["message"]


async def test_options_per_feature_are_capped(agent: Agent) -> None:
    options = {"node": {f"o{i}": "x" for i in range(1000)}}
    body = _json({"requests": ["node"], "options": options}).encode()
    status, answer, _ = await post(agent, "/v1/ensure", body)
    assert status == 400, answer
    assert "at most 64" in answer["error"]["message"]


def _json(value: Any) -> str:
    return json.dumps(value)


def _request_counts(agent: Agent, route: str) -> dict[str, float]:
    _, text = http_get(agent.base + "/metrics")
    counts: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith("runner_agent_http_requests_total{") and f'route="{route}"' in line:
            status = re.search(r'status="(\d+)"', line)
            assert status is not None
            counts[status[1]] = counts.get(status[1], 0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_client_disconnects_mid_body_are_499_not_errors(agent: Agent) -> None:
    for i in range(200):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(agent.socket))
        sock.sendall(
            b"POST /v1/reload HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"reason": "'
        )
        if i % 2:
            time.sleep(0.005)  # half of them once the handler is reading
        sock.close()
    agent.wait_for(
        lambda: _request_counts(agent, "/v1/reload").get("499") == 200,
        timeout=20,
        what="200 requests counted as 499",
    )
    assert "500" not in _request_counts(agent, "/v1/reload")
    log = agent.logs()
    assert "Traceback" not in log
    assert "unhandled error" not in log


def test_a_body_that_trickles_past_the_body_timeout_is_a_408(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config(body_timeout_seconds=1))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(agent.socket))
    start = time.monotonic()
    sock.sendall(
        b"POST /v1/reload HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"reason": '
    )
    answer = b""
    while b"}}" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"server.body_timeout_seconds" in answer
    assert time.monotonic() - start < 3.0
