"""CUDA-aware resolution through a real agent on the replay (driver CUDA 13.0): a job
whose hook sends its platform, as the real hook does (the hook cannot read the driver),
gets the toolkit the node's driver runs; a runner that sees no GPU gets the default."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from tests.http.test_ensure_api import job_start, post_ndjson
from tests.support import fixtures
from tests.support.agentproc import Agent, Starter
from tests.support.server import Reply, Server

PLATFORM = {"os": "linux", "arch": "x64", "libc": "glibc", "package_manager": "apt"}


def agent_with_toolkit(start_agent: Starter, http_server: Server) -> Agent:
    catalog = start_agent.workdir / "catalog"
    sums: dict[str, Any] = {}
    for version in ("12.4.1", "13.0.1"):
        body = fixtures.tar_gz({"bin/nvcc": (f"#!/bin/sh\necho {version}\n".encode(), 0o755)})
        http_server.route(f"/x/tk-{version}.tar.gz", Reply(body=body))
        sums[version] = {"linux": hashlib.sha256(body).hexdigest()}
    feature = {
        "id": "tk",
        "name": "a CUDA toolkit",
        "versions": ["12.4.1", "13.0.1"],
        "default": "12.4",
        "platforms": ["linux"],
        "toolcache_name": "tk",
        "install": [
            {
                "method": "archive",
                "platforms": ["linux"],
                "url": "https://example.invalid/tk-{version}.tar.gz",
                "sha256": sums,
            }
        ],
        "env": {"path": ["bin"]},
        "gpu": {"cuda": "{major}.{minor}"},
    }
    (catalog / "tk").mkdir(parents=True)
    (catalog / "tk" / "feature.yaml").write_text(yaml.safe_dump(feature))
    config = start_agent.base_config()
    config["catalog"] = {"paths": [str(catalog)]}
    config["cache"] = {"root": str(start_agent.workdir / "store")}
    config["installer"] = {"mirrors": {"https://example.invalid/": http_server.url("/x/")}}
    config["gpu"] = {"backend": "fake"}
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=30, what="ready")
    return agent


async def test_a_jobs_toolkit_is_the_one_the_nodes_driver_runs(
    start_agent: Starter, http_server: Server
) -> None:
    agent = agent_with_toolkit(start_agent, http_server)
    gpus = {"kind": "list", "devices": ["0"]}
    status, events = await post_ndjson(
        agent, "/v1/jobs", job_start(platform=PLATFORM, gpus=gpus, requests=["tk"])
    )
    assert status == 200, events
    [feature] = events[-1]["features"]
    assert (feature["id"], feature["version"]) == ("tk", "13.0.1")
    # A runner that sees no GPU: the catalog default, with no driver to follow.
    status, events = await post_ndjson(
        agent,
        "/v1/jobs",
        job_start(runner="runner-2", platform=PLATFORM, gpus={"kind": "none"}, requests=["tk"]),
    )
    assert status == 200, events
    assert events[-1]["features"][0]["version"] == "12.4.1"
