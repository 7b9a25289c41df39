"""Schemathesis against the real agent's /openapi.json, on the ensure endpoint: no 500s,
every error in the documented error shape, every streamed line a documented event.

The agent's catalog holds one feature, served by the test's own HTTP server, so a
generated request that happens to be valid installs from loopback only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.support import fixtures
from tests.support.agentproc import Starter, free_port, make_workdir, remove_tree
from tests.support.server import Reply, Server

BODY = fixtures.tar_gz({"bin/tool": (b"#!/bin/sh\necho tool 1.0.0\n", 0o755)}, top="t")


@pytest.fixture(scope="module")
def agent_url() -> Iterator[tuple[str, dict[str, Any]]]:
    workdir = make_workdir()
    starter = Starter(workdir)
    with Server() as server:
        server.route("/x/tool-1.0.0.tar.gz", Reply(body=BODY))
        fixtures.archive_catalog(workdir / "catalog", "tool", BODY)
        (workdir / "job.token").write_text("job-token\n")
        tcp = f"127.0.0.1:{free_port()}"
        config = starter.base_config(api_tcp_address=tcp, job_token_file=str(workdir / "job.token"))
        config["catalog"] = {"bundled": False, "paths": [str(workdir / "catalog")]}
        config["cache"] = {"root": str(workdir / "store")}
        config["installer"] = {"mirrors": {"https://example.invalid/": server.url("/x/")}}
        agent = starter.start(config, env={"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"})
        agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
        base = f"http://{tcp}"
        doc = requests.get(f"{base}/openapi.json", timeout=10).json()
        try:
            yield base, doc
        finally:
            starter.stop_all()
            remove_tree(workdir)


@pytest.fixture(scope="module")
def api_schema(agent_url: tuple[str, dict[str, Any]]) -> Any:
    base, doc = agent_url
    schema = schemathesis.openapi.from_dict(doc)
    schema.config.update(base_url=base)
    return schema.include(path_regex="^/v1/(ensure|plan)$")


# schemathesis' pytest plugin does not run under pytest 9 yet; its strategies do.
@pytest.mark.parametrize(("path", "method"), [("/v1/ensure", "POST"), ("/v1/plan", "POST")])
def test_ensure_never_fails_and_answers_in_the_documented_shapes(
    api_schema: Any, path: str, method: str
) -> None:
    operation = api_schema[path][method]

    @hypothesis.given(case=operation.as_strategy())
    @hypothesis.settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        response = case.call(headers={"Authorization": "Bearer job-token"}, timeout=60)
        assert response.status_code < 500, response.text
        if response.headers.get("Content-Type", "").startswith("application/x-ndjson"):
            lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
            assert lines[0]["event"] == "plan"
            assert lines[-1]["event"] == "result"
            assert all(isinstance(line.get("event"), str) for line in lines)
            return
        case.validate_response(
            response,
            checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
        )

    check()
