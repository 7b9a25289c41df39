"""HTTP details against a real agent: the probe port's answer for /openapi.json, 405s
counted under their route template, and RFC 3339 timestamps in every JSON body (with the
CLI still printing them)."""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from agent.cli import client
from tests.http.test_ensure_api import (
    ARCHIVE,
    BODY,
    _config,
    call_json,
    ensure,
    job_start,
    post_ndjson,
)
from tests.services.conftest import fake
from tests.support.agentproc import Agent, Starter, run_cli
from tests.support.server import Reply, Server

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
"""The form of the agent's log lines: UTC, milliseconds, ``Z``."""


def stamp(value: Any, *, near: float | None = None, within: float = 120.0) -> float:
    """Assert ``value`` is an RFC 3339 timestamp (near ``near``, if given); its Unix time."""
    assert isinstance(value, str), f"{value!r} is not an RFC 3339 string"
    assert RFC3339.match(value), f"{value!r} is not RFC 3339 UTC with milliseconds"
    when = datetime.fromisoformat(value).timestamp()
    if near is not None:
        assert abs(when - near) < within, (value, near)
    return when


def api(agent: Agent, method: str, target: str, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else None
    return client.request(agent.socket, method, target, token=None, body=raw)


async def test_the_probe_port_points_to_the_api_socket_for_openapi(
    start_agent: Starter,
) -> None:
    agent = start_agent.start(start_agent.base_config())
    status, body = agent.get("/openapi.json")
    assert status == 404
    assert body["error"]["code"] == "not_found"
    line = f"curl --unix-socket {agent.socket} http://agent/openapi.json"
    assert line in body["error"]["message"]
    assert body["error"]["details"] == {"socket": str(agent.socket)}
    # What it points to is there.
    status, doc = api(agent, "GET", "/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.1")
    # Any other unknown path on this port says what the port serves, not "see
    # /openapi.json", which is not here.
    status, body = agent.get("/v1/status")
    assert status == 404
    assert "/healthz, /readyz and /metrics" in body["error"]["message"]
    assert "see /openapi.json" not in body["error"]["message"]


async def test_a_405_is_counted_under_its_route_template(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    status, body = api(agent, "GET", "/v1/plan")
    assert status == 405, body
    assert body["error"]["details"] == {"allowed": ["POST"]}
    for _ in range(2):
        status, _ = api(agent, "PUT", "/v1/features/node")
        assert status == 405
    async with aiohttp.ClientSession() as session, session.post(agent.base + "/healthz") as resp:
        assert resp.status == 405
    series = "runner_agent_http_requests_total"
    assert (
        agent.metric(f'{series}{{listener="api",method="GET",route="/v1/plan",status="405"}}')
        == 1.0
    )
    assert (
        agent.metric(
            f'{series}{{listener="api",method="PUT",route="/v1/features/{{id}}",status="405"}}'
        )
        == 2.0
    )
    assert (
        agent.metric(f'{series}{{listener="probe",method="POST",route="/healthz",status="405"}}')
        == 1.0
    )
    assert (
        agent.metric(f'{series}{{listener="api",method="GET",route="unmatched",status="405"}}')
        is None
    )


async def test_status_readyz_and_config_timestamps_are_rfc3339(start_agent: Starter) -> None:
    before = time.time()
    agent = start_agent.start(start_agent.base_config())
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    _, ready = agent.get("/readyz")
    for cond in ready["conditions"]:
        stamp(cond["since"], near=before)
    status, body = api(agent, "GET", "/v1/status")
    assert status == 200
    started = stamp(body["started_at"], near=before)
    assert started >= before - 1
    stamp(body["config"]["loaded_at"], near=before)
    for cond in body["conditions"]:
        stamp(cond["since"], near=before)
    _, config = api(agent, "GET", "/v1/config")
    stamp(config["config"]["loaded_at"], near=before)
    # The CLI still prints the status.
    shown = run_cli("status", "--socket", str(agent.socket))
    assert shown.returncode == 0, shown.stderr
    assert "config: generation 1" in shown.stdout
    assert "[ok] store:" in shown.stdout


def _services(workdir: Path) -> dict[str, Any]:
    sock = workdir / "web.sock"
    return {
        "web": {
            "command": fake("httpd", workdir, str(sock)),
            "health": {
                "kind": "http",
                "socket": str(sock),
                "path": "/health",
                "expect_body": "OK",
                "interval_seconds": 0.5,
                "timeout_seconds": 0.5,
            },
            "stop": {"grace_seconds": 2},
        },
        # Crashes once, then waits a long backoff: last exit, next start and the delay.
        "crashy": {
            "command": fake("crash", workdir),
            "required_for_ready": False,
            "restart": {"backoff_initial_seconds": 600, "backoff_max_seconds": 600},
        },
    }


async def test_service_and_gate_timestamps_are_rfc3339_and_the_cli_prints_them(
    start_agent: Starter,
) -> None:
    before = time.time()
    config = start_agent.base_config()
    config["services"] = _services(start_agent.workdir)
    agent = start_agent.start(config)
    try:
        agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")

        def listed() -> dict[str, dict[str, Any]]:
            return {s["name"]: s for s in api(agent, "GET", "/v1/services")[1]["services"]}

        agent.wait_for(
            lambda: (
                listed()["web"]["last_health"] is not None
                and listed()["crashy"]["next_start_at"] is not None
            ),
            what="a health check and a scheduled restart",
        )
        services = listed()
        web, crashy = services["web"], services["crashy"]
        stamp(web["since"], near=before)
        stamp(web["last_health"]["at"], near=before)
        assert web["last_exit_at"] is None
        stamp(crashy["since"], near=before)
        stamp(crashy["last_exit_at"], near=before)
        assert before < stamp(crashy["next_start_at"]) <= time.time() + 600  # less jitter
        assert crashy["backoff"]
        for planned in crashy["backoff"]:
            stamp(planned["at"], near=before)

        status, logs = api(agent, "GET", "/v1/services/web/logs?lines=5")
        assert status == 200
        assert logs["lines"]
        for line in logs["lines"]:
            stamp(line["time"], near=before)
        status, gate = api(agent, "GET", "/v1/stop-gate")
        assert status == 200
        stamp(gate["since"], near=before)

        # The CLI reads them: the table and the log lines (local HH:MM:SS) still print.
        table = run_cli("services", "ls", "--socket", str(agent.socket))
        assert table.returncode == 0, table.stderr
        assert re.search(r"^web\s+running\s+yes", table.stdout, re.M), table.stdout
        assert re.search(r"^crashy\s+restarting", table.stdout, re.M), table.stdout
        printed = run_cli("services", "logs", "web", "-n", "5", "--socket", str(agent.socket))
        assert printed.returncode == 0, printed.stderr
        assert re.search(r"^\d\d:\d\d:\d\d .*GET /health", printed.stdout, re.M), printed.stdout
    finally:
        # Gracefully, so the agent stops the services it started.
        agent.signal(signal.SIGTERM)
        agent.wait()


async def test_cache_timestamps_are_rfc3339_and_a_lease_keeps_its_epoch(
    start_agent: Starter, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY))
    agent = start_agent.start(_config(start_agent, http_server))
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    before = time.time()
    status, opened = await post_ndjson(agent, "/v1/jobs", job_start())
    assert status == 200, opened
    job = {"id": opened[0]["id"], "secret": opened[0]["secret"]}
    status, events = await ensure(agent, {"requests": ["tool"], "job": job})
    assert status == 200
    assert events[-1]["ok"] is True, events
    status, listing = await call_json(agent, "GET", "/v1/cache")
    assert status == 200, listing
    (entry,) = [e for e in listing["entries"] if e["state"] == "ok"]
    stamp(entry["last_used"], near=before)
    (lease,) = entry["in_use"]
    expires = stamp(lease["expires"])
    assert before < expires <= time.time() + 600  # a 300 s lease, refreshed while the job runs
    # The one field kept as Unix time too: a hook compares it with `date +%s`.
    assert isinstance(lease["expires_epoch"], float)
    assert abs(lease["expires_epoch"] - expires) < 0.001
