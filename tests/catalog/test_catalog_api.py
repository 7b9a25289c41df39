"""The catalog through the real daemon's API: /v1/features, /v1/plan, and bad input."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.catalog import factories
from tests.support.agentproc import Agent, Starter

TARGET = {"os": "linux", "arch": "arm64", "libc": "glibc", "package_manager": "apt"}


@pytest.fixture
def agent(start_agent: Starter) -> Agent:
    extra = start_agent.workdir / "extra"
    factories.write(extra, "id: [\n", name="broken")
    factories.write(extra, factories.archive_feature("mine"))
    config = start_agent.base_config()
    config["catalog"] = {"paths": [str(extra)]}
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    return agent


async def call(agent: Agent, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, f"http://agent{path}", json=body) as resp,
    ):
        return resp.status, await resp.json()


async def test_a_broken_user_manifest_leaves_the_rest_serving(agent: Agent) -> None:
    _, ready = agent.get("/readyz")
    catalog = next(c for c in ready["conditions"] if c["name"] == "catalog")
    assert catalog["ok"] is True
    assert "disabled: broken" in catalog["message"]
    status, body = await call(agent, "GET", "/v1/features")
    assert status == 200
    assert {f["id"] for f in body["features"]} >= {"node", "python", "mine"}
    assert body["disabled"][0]["feature"] == "broken"
    assert "invalid YAML" in body["disabled"][0]["problem"]


async def test_one_feature(agent: Agent) -> None:
    status, body = await call(agent, "GET", "/v1/features/node")
    assert status == 200
    assert body["toolcache_name"] == "node"
    status, body = await call(agent, "GET", "/v1/features/nodejs")
    assert status == 404
    assert "did you mean node?" in body["error"]["message"]
    status, body = await call(agent, "GET", "/v1/features/broken")
    assert status == 404
    assert body["error"]["code"] == "disabled"
    assert "invalid YAML" in body["error"]["message"]


async def test_plan_for_a_runner(agent: Agent) -> None:
    status, body = await call(
        agent,
        "POST",
        "/v1/plan",
        {
            "labels": ["self-hosted", "feature:python", "feature:ninja"],
            "team": {"features": ["jq"]},
            "target": TARGET,
        },
    )
    assert status == 200, body
    assert [f["id"] for f in body["features"]] == ["jq", "ninja", "python"]
    assert body["platform"]["arch"] == "arm64"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"labels": ["feature:../x"], "target": TARGET}, 400, "invalid_request"),
        ({"labels": ["feature:nodejs"], "target": TARGET}, 422, "unresolvable"),
        ({"labels": [], "target": {**TARGET, "arch": "sparc"}}, 400, "validation_error"),
        ({"labels": [], "target": {**TARGET, "colour": 1}}, 400, "validation_error"),
        ({"labels": []}, 400, "validation_error"),
        ({"team": {"featrues": []}, "target": TARGET}, 400, "validation_error"),
        ({"labels": ["x"] * 65, "target": TARGET}, 400, "validation_error"),
    ],
)
async def test_bad_plan_requests(agent: Agent, body: Any, status: int, code: str) -> None:
    got, answer = await call(agent, "POST", "/v1/plan", body)
    assert got == status, answer
    assert answer["error"]["code"] == code
    assert agent.get("/healthz")[0] == 200


async def test_an_api_plan_names_the_request_a_label_overrode(agent: Agent) -> None:
    status, body = await call(
        agent,
        "POST",
        "/v1/plan",
        {"labels": ["feature:node@22"], "team": {"features": ["node@20"]}, "target": TARGET},
    )
    assert status == 200, body
    assert body["features"][0]["version"].startswith("22.")
    note = (
        "feature:node@20 (from team) is overridden by feature:node@22 (from label): "
        "using feature:node@22"
    )
    assert note in body["warnings"]
    assert any(r["message"] == f"request merge: {note}" for r in agent.log_records())
