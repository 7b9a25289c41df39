"""The real daemon's probe, metrics and API listeners, over real sockets."""

from __future__ import annotations

import stat
from pathlib import Path

import aiohttp

from tests.support.agentproc import Starter


async def api_get(sock: Path, path: str, token: str | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session,
        session.get(f"http://agent{path}", headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def test_healthz_reports_loop_lag(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    status, body = agent.get("/healthz")
    assert status == 200
    assert body["status"] == "ok"
    assert 0 <= body["loop_lag_seconds"] < 1
    assert "loop_lag_max_seconds" in body
    assert body["uptime_seconds"] >= 0


async def test_readyz_lists_every_condition(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    _, body = agent.get("/readyz")
    assert body["ready"] is True
    assert {c["name"]: c["ok"] for c in body["conditions"]} == {
        "api": True,
        "catalog": True,
        "config": True,
        "gpu": True,  # no GPU here: nothing to be unhealthy
        "lifecycle": True,
        "store": True,
        "tasks": True,
    }
    assert all(c["message"] for c in body["conditions"])


async def test_metrics_has_the_agents_own_series(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    agent.get("/healthz")
    async with aiohttp.ClientSession() as session, session.get(agent.base + "/metrics") as resp:
        text = await resp.text()
        assert resp.status == 200
        assert resp.content_type == "text/plain"
    for series in (
        'runner_agent_build_info{python="',
        "runner_agent_start_time_seconds ",
        "process_resident_memory_bytes ",
        "runner_agent_event_loop_lag_seconds ",
        'runner_agent_http_requests_total{listener="probe",method="GET",route="/healthz",status="200"}',
        'runner_agent_http_request_duration_seconds_bucket{le="0.0005",listener="probe"',
        "runner_agent_config_reload_failures_total 0.0",
        'runner_agent_condition{condition="config"} 1.0',
        "runner_agent_ready ",
    ):
        assert series in text, series


async def test_metrics_negotiates_openmetrics(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    headers = {"Accept": "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(agent.base + "/metrics", headers=headers) as resp,
    ):
        text = await resp.text()
        assert resp.content_type == "application/openmetrics-text"
    assert text.rstrip().endswith("# EOF")
    assert "runner_agent_build_info" in text


async def test_unknown_paths_are_counted_as_unmatched(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    for n in range(5):
        status, body = agent.get(f"/scan/{n}")
        assert status == 404
        assert body["error"]["code"] == "not_found"
    assert (
        agent.metric(
            'runner_agent_http_requests_total{listener="probe",method="GET",route="unmatched",status="404"}'
        )
        == 5.0
    )


async def test_the_api_socket_is_mode_0660(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    assert stat.S_IMODE(agent.socket.stat().st_mode) == 0o660


async def test_status_over_the_unix_socket(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    status, body = await api_get(agent.socket, "/v1/status")
    assert status == 200
    assert body["version"]
    assert body["pid"] == agent.proc.pid
    assert body["config"]["generation"] == 1
    assert body["config"]["source"] == str(agent.config)
    assert {c["name"] for c in body["conditions"]} == {
        "api",
        "catalog",
        "config",
        "gpu",
        "lifecycle",
        "store",
        "tasks",
    }


async def test_config_endpoint_never_shows_token_values(start_agent: Starter) -> None:
    job = start_agent.workdir / "job.token"
    job.write_text("job-secret-value\n")
    agent = start_agent.start(start_agent.base_config(job_token_file=str(job)))
    status, body = await api_get(agent.socket, "/v1/config", token="job-secret-value")
    assert status == 200
    assert body["tokens"] == {"job": True, "admin": False}
    assert body["settings"]["server"]["job_token_file"] == str(job)
    assert "job-secret-value" not in str(body)
    assert "job-secret-value" not in agent.logs()


async def test_openapi_documents_every_route_from_the_models(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    status, doc = await api_get(agent.socket, "/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/v1/status",
        "/v1/config",
        "/v1/reload",
        "/v1/features",
        "/v1/features/{id}",
        "/v1/plan",
        "/v1/services",
        "/v1/services/{name}/logs",
        "/v1/services/{name}/start",
        "/v1/gpu",
        "/v1/gpu/health/clear",
        "/v1/services/{name}/stop",
        "/v1/services/{name}/restart",
        "/v1/stop-gate",
        "/v1/ensure",
        "/v1/jobs",
        "/v1/jobs/current",
        "/v1/jobs/{id}/complete",
        "/v1/cache",
        "/v1/cache/verify",
        "/v1/cache/gc",
        "/v1/cache/evict",
        "/openapi.json",
    }
    for verb in ("start", "stop", "restart"):
        assert doc["paths"][f"/v1/services/{{name}}/{verb}"]["post"]["x-scope"] == "admin"
    assert doc["paths"]["/v1/stop-gate"]["post"]["x-scope"] == "admin"
    assert doc["paths"]["/v1/services"]["get"]["x-scope"] == "job"
    reload_op = doc["paths"]["/v1/reload"]["post"]
    assert reload_op["x-scope"] == "admin"
    assert {"400", "401", "403", "413", "415", "422"} <= set(reload_op["responses"])
    schemas = doc["components"]["schemas"]
    assert {"StatusResponse", "ReloadRequest", "ErrorBody", "ConfigResponse"} <= set(schemas)
    assert schemas["ReloadRequest"]["additionalProperties"] is False


async def test_odd_methods_do_not_create_new_series(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    async with aiohttp.ClientSession() as session:
        for verb in ("PROPFIND", "MKCOL", "LOCK"):
            async with session.request(verb, agent.base + "/healthz") as resp:
                assert resp.status == 405
    assert (
        agent.metric(
            'runner_agent_http_requests_total{listener="probe",method="other",route="/healthz",status="405"}'
        )
        == 3.0
    )
