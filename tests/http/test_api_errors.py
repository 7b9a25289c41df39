"""Bad API input of every kind gets the one JSON error shape, and the agent keeps serving."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.agentproc import Agent, Starter, free_port


def unix_session(agent: Agent) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(agent.socket)))


async def post_reload(
    agent: Agent, data: bytes, content_type: str = "application/json"
) -> tuple[int, Any]:
    async with (
        unix_session(agent) as session,
        session.post(
            "http://agent/v1/reload", data=data, headers={"Content-Type": content_type}
        ) as resp,
    ):
        return resp.status, await resp.json()


@pytest.fixture
def agent(start_agent: Starter) -> Agent:
    return start_agent.start(start_agent.base_config(max_request_bytes=1024))


async def test_malformed_json_is_a_400_that_says_where(agent: Agent) -> None:
    status, body = await post_reload(agent, b'{"reason": ')
    assert status == 400
    assert body["error"]["code"] == "invalid_json"
    assert "line 1 column 12" in body["error"]["message"]


async def test_a_schema_violation_names_the_field(agent: Agent) -> None:
    status, body = await post_reload(agent, json.dumps({"reason": 5, "force": True}).encode())
    assert status == 400
    assert body["error"]["code"] == "validation_error"
    fields = {d["field"]: d["type"] for d in body["error"]["details"]}
    assert fields == {"reason": "string_type", "force": "extra_forbidden"}
    assert "reason:" in body["error"]["message"]


async def test_a_body_that_is_not_an_object_is_refused(agent: Agent) -> None:
    status, body = await post_reload(agent, b"[1, 2]")
    assert status == 400
    assert body["error"]["code"] == "validation_error"


async def test_an_oversized_body_is_a_413(agent: Agent) -> None:
    status, body = await post_reload(agent, json.dumps({"reason": "x" * 5000}).encode())
    assert status == 413
    assert body["error"]["details"] == {"limit": 1024}
    assert "server.max_request_bytes" in body["error"]["message"]


async def test_an_oversized_chunked_body_is_a_413(agent: Agent) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b" " * 512

    async with (
        unix_session(agent) as session,
        session.post(
            "http://agent/v1/reload", data=chunks(), headers={"Content-Type": "application/json"}
        ) as resp,
    ):
        assert resp.status == 413


async def test_a_wrong_content_type_is_a_415(agent: Agent) -> None:
    status, body = await post_reload(agent, b"reason=x", "application/x-www-form-urlencoded")
    assert status == 415
    assert body["error"]["details"]["expected"] == "application/json"


async def test_an_unknown_route_is_a_json_404(agent: Agent) -> None:
    async with unix_session(agent) as session, session.get("http://agent/v1/nothing") as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body["error"]["code"] == "not_found"
    assert "/openapi.json" in body["error"]["message"]


async def test_a_wrong_method_is_a_405_with_allow(agent: Agent) -> None:
    async with unix_session(agent) as session, session.delete("http://agent/v1/status") as resp:
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        body = await resp.json()
    assert body["error"]["code"] == "method_not_allowed"


async def test_the_agent_keeps_serving_after_bad_input(agent: Agent) -> None:
    expected = {b"{": 400, b"\xff\xfe": 400, b"[]": 400, b'{"reason": null}' * 100: 413}
    for data, status in expected.items():
        assert (await post_reload(agent, data))[0] == status
    assert agent.get("/healthz")[0] == 200
    async with unix_session(agent) as session, session.get("http://agent/v1/status") as resp:
        assert resp.status == 200


# --- scopes and tokens -----------------------------------------------------------------


@pytest.fixture
def secured(start_agent: Starter) -> tuple[Agent, str]:
    (start_agent.workdir / "job.token").write_text("job-token\n")
    (start_agent.workdir / "admin.token").write_text("admin-token")
    tcp = f"127.0.0.1:{free_port()}"
    agent = start_agent.start(
        start_agent.base_config(
            api_tcp_address=tcp,
            job_token_file=str(start_agent.workdir / "job.token"),
            admin_token_file=str(start_agent.workdir / "admin.token"),
        )
    )
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="API up")
    return agent, f"http://{tcp}"


async def call(
    url: str, method: str = "GET", token: str | None = None, **kw: Any
) -> tuple[int, Any]:
    headers = {"Authorization": token} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers, **kw) as resp,
    ):
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("method", "path", "token", "expected"),
    [
        ("GET", "/v1/status", None, 401),
        ("GET", "/v1/status", "Bearer wrong", 401),
        ("GET", "/v1/status", "Basic am9iLXRva2Vu", 401),
        ("GET", "/v1/status", "Bearer job-token", 200),
        ("GET", "/v1/status", "Bearer admin-token", 200),
        ("POST", "/v1/reload", None, 401),
        ("POST", "/v1/reload", "Bearer job-token", 403),
        ("POST", "/v1/reload", "Bearer admin-token", 200),
        ("GET", "/openapi.json", None, 200),
    ],
)
async def test_scopes_over_tcp(
    secured: tuple[Agent, str], method: str, path: str, token: str | None, expected: int
) -> None:
    _, base = secured
    status, body = await call(base + path, method, token)
    assert status == expected, body
    if expected == 401:
        assert body["error"]["code"] == "unauthorized"
    if expected == 403:
        assert body["error"]["details"] == {"required_scope": "admin", "granted": ["job"]}


async def test_a_401_carries_a_bearer_challenge(secured: tuple[Agent, str]) -> None:
    _, base = secured
    async with aiohttp.ClientSession() as session, session.get(base + "/v1/status") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_configured_tokens_are_required_on_the_socket_too(secured: tuple[Agent, str]) -> None:
    agent, _ = secured
    async with unix_session(agent) as session:
        async with session.post("http://agent/v1/reload") as resp:
            assert resp.status == 401
        headers = {"Authorization": "Bearer job-token"}
        async with session.post("http://agent/v1/reload", headers=headers) as resp:
            assert resp.status == 403
        async with session.get("http://agent/v1/status") as resp:
            assert resp.status == 401


async def test_without_tokens_the_socket_is_open_and_tcp_is_not_offered(
    start_agent: Starter,
) -> None:
    agent = start_agent.start(start_agent.base_config())
    async with unix_session(agent) as session, session.post("http://agent/v1/reload") as resp:
        assert resp.status == 200
        assert (await resp.json())["generation"] == 2


# --- a crash inside a handler ------------------------------------------------------------


async def test_a_crash_is_a_500_without_a_stack_trace(caplog: pytest.LogCaptureFixture) -> None:
    # The real API application and middleware stack, with one route that breaks.
    from agent.config import models, reloading, tokens
    from agent.http import api, context, draining
    from agent.install import coordinator
    from agent.install import metrics as install_metrics
    from agent.jobs import registry
    from agent.observe import conditions, metrics

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    loaded = reloading.Loaded(
        settings=models.Settings(), tokens=tokens.Tokens(), generation=1, source="test"
    )
    ctx = context.Context(
        reloader=reloading.Reloader(None, loaded),
        conditions=conditions.Conditions(),
        started=0.0,
        installs=coordinator.Coordinator(models.Settings, install_metrics.InstallMetrics(None)),
        jobs=registry.Jobs(),
    )
    app = api.make_app(ctx, m=metrics.Metrics(), inflight=draining.InFlight())
    app.router.add_get("/boom", boom)
    async with TestServer(app, host="127.0.0.1") as server, TestClient(server) as client:
        resp = await client.get("/boom")
        assert resp.status == 500
        body = await resp.json()
    assert body == {
        "error": {
            "code": "internal_error",
            "message": "internal error; the agent's log has the details",
            "details": None,
        }
    }
    assert "secret internals" in caplog.text  # logged for the operator, not sent


async def test_a_non_ascii_token_is_a_401_not_a_crash(secured: tuple[Agent, str]) -> None:
    agent, base = secured
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": "Bearer caf\u00e9".encode().decode("latin-1")}
        async with session.get(base + "/v1/status", headers=headers) as resp:
            assert resp.status == 401
    assert "Traceback" not in agent.logs()


async def test_head_works_on_get_routes(agent: Agent) -> None:
    async with unix_session(agent) as session, session.head("http://agent/v1/status") as resp:
        assert resp.status == 200
