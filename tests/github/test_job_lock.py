"""The lock file through a real agent: the one at a job's commit on GitHub (the stub,
serving the contents API's published payload) and the ``lock`` body of POST /v1/plan and
POST /v1/ensure. A lock pins node@20 to 20.11.1 (not the catalog's newest 20.x) and its
download to the lock's hash; a lock with errors is refused, naming its source and the
problem, before a job opens; a commit without one is as before. Downloads come from the
test's loopback server standing for nodejs.org (installer.mirrors)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from agent.catalog import lockfile
from tests.github.stub import SHA, Stub, job
from tests.github.test_job_team import complete, start
from tests.http.test_ensure_api import _config, call_json, ensure, post_ndjson
from tests.support import fixtures
from tests.support.agentproc import Agent, Starter
from tests.support.server import Server, ok

KEY = "linux/x64/glibc"
NODE_URL = "https://nodejs.org/dist/v20.11.1/node-v20.11.1-linux-x64.tar.gz"
NODE = fixtures.fake_node("20.11.1")
"""Made once: a gzip header holds the time it was made, so another call's bytes differ."""
NODE_SHA = hashlib.sha256(NODE).hexdigest()
TARBALL = "/dist/v20.11.1/node-v20.11.1-linux-x64.tar.gz"
SUMS = "/dist/v20.11.1/SHASUMS256.txt"
NEWEST_20 = fixtures.node_plan(Path("/unused"), "20")["features"][0]["version"]
"""The highest 20.x the bundled catalog lists: what node@20 gets without a lock."""
assert NEWEST_20 != "20.11.1"
TEAM = ".github/runner-config.yml"
LOCK_PATH = f"/repos/octo/repo/contents/{lockfile.PATH}"
PASSWORD = "s3cr3t-pa55word"
TARGET = {"os": "linux", "arch": "x64", "libc": "glibc", "package_manager": "apt"}


def node_lock(sha256: str = NODE_SHA, size: int = len(NODE), url: str = NODE_URL) -> lockfile.Lock:
    lock = lockfile.Lock()
    artifact = lockfile.Artifact(url=url, sha256=sha256, size=size)
    lock.put("node", "20.11.1", KEY, lockfile.Entry(method="archive", artifacts=(artifact,)))
    return lock


def serve_node(server: Server) -> None:
    """:data:`NODE` and its SHASUMS256.txt where nodejs.org has 20.11.1's."""
    server.route(TARBALL, ok(NODE))
    server.route(SUMS, ok(f"{NODE_SHA}  node-v20.11.1-linux-x64.tar.gz\n".encode()))


def node_config(starter: Starter, server: Server) -> dict[str, Any]:
    """The bundled catalog (node) and the tool catalog, nodejs.org served by ``server``."""
    config = _config(starter, server)
    config["installer"]["mirrors"]["https://nodejs.org/dist/"] = server.url("/dist/")
    config["installer"]["download_attempts"] = 1
    return config


def ready(agent: Agent) -> Agent:
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    return agent


@pytest.fixture
def agent(start_agent: Starter, http_server: Server, stub: Stub, tmp_path: Path) -> Agent:
    """An agent that reads team files and locks from the stub (a job GitHub confirms)."""
    token = tmp_path / "github.token"
    token.write_text(stub.job_token + "\n")
    config = node_config(start_agent, http_server)
    config["github"] = {"api_url": stub.url, "token_file": str(token), "max_attempts": 1}
    serve_node(http_server)
    stub.jobs[("octo/repo", "17", "1")] = [job("runner-1", 5, ["self-hosted"])]
    stub.files[("octo/repo", SHA, TEAM)] = "features:\n  - node@20\n"
    return ready(start_agent.start(config))


@pytest.fixture
def plain(start_agent: Starter, http_server: Server) -> Agent:
    """An agent without GitHub, for the API's lock bodies."""
    serve_node(http_server)
    return ready(start_agent.start(node_config(start_agent, http_server)))


async def test_the_lock_at_the_commit_pins_the_version_and_its_hash(
    agent: Agent, stub: Stub, http_server: Server
) -> None:
    stub.files[("octo/repo", SHA, lockfile.PATH)] = node_lock().dump()
    status, events = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 200, events
    opened = events[0]
    assert opened["event"] == "job"
    assert opened["sources"]["team config"] == ["node@20"]
    assert opened["sources"]["lock"] == ["node@20.11.1"]
    plan = next(e for e in events if e["event"] == "plan")
    assert [(f["id"], f["version"]) for f in plan["features"]] == [("node", "20.11.1")]
    result = events[-1]
    assert result["ok"] is True, result
    [node] = result["features"]
    assert (node["version"], node["result"]) == ("20.11.1", "installed")
    assert node["entry"].endswith("/node/20.11.1/x64")
    assert http_server.count(TARBALL) == 1
    assert stub.requests[LOCK_PATH] == 1
    await complete(agent, opened)


async def test_the_job_downloads_what_the_lock_pins_or_nothing(
    agent: Agent, stub: Stub, http_server: Server
) -> None:
    # The lock pins other bytes than the mirror (and its checksum file) serves: the
    # download action carries the lock's sha256 and is refused naming both hashes.
    pinned = "0123456789abcdef" * 4
    stub.files[("octo/repo", SHA, lockfile.PATH)] = node_lock(sha256=pinned).dump()
    status, events = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 200, events
    failed = next(e for e in events if e["event"] == "failed")
    assert failed["step"] == "download"
    assert f"is {NODE_SHA}, but the lock file pins {pinned}" in failed["error"], failed
    result = events[-1]
    assert result["ok"] is False
    [node] = result["features"]
    assert (node["version"], node["result"]) == ("20.11.1", "failed")
    assert not (Path(events[0]["store"]) / "node" / "20.11.1" / "x64").exists()
    await complete(agent, events[0])


def _bad_sha() -> str:
    data = json.loads(node_lock().dump())
    data["features"]["node"]["20.11.1"][KEY]["artifacts"][0]["sha256"] = "NOT-A-HASH"
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"lockVersion": 1, "features": {', "is not JSON"),
        (
            _bad_sha(),
            "features.'node'.'20.11.1'.'linux/x64/glibc'.artifacts[0].sha256 is 'NOT-A-HASH'; "
            "expected 64 lowercase hex digits",
        ),
    ],
    ids=["not-json", "bad-sha256"],
)
async def test_a_lock_with_errors_refuses_the_job_and_opens_nothing(
    agent: Agent, stub: Stub, http_server: Server, text: str, problem: str
) -> None:
    stub.files[("octo/repo", SHA, lockfile.PATH)] = text
    status, [error] = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 400, error
    assert error["error"]["code"] == "validation_error"
    message = error["error"]["message"]
    assert f"octo/repo@{SHA[:12]}:{lockfile.PATH}" in message, message
    assert problem in message, message
    status, current = await call_json(agent, "GET", "/v1/jobs/current")
    assert (status, current["jobs"]) == (200, [])
    assert http_server.count(TARBALL) == 0
    # Nothing was left open: the runner's next job (a commit without a lock) starts.
    other = "b" * 40
    stub.files[("octo/repo", other, TEAM)] = "features:\n  - node@20.11.1\n"
    status, events = await post_ndjson(agent, "/v1/jobs", start(sha=other))
    assert status == 200, events
    assert events[-1]["ok"] is True, events[-1]
    await complete(agent, events[0])


async def test_a_commit_without_a_lock_resolves_as_before(
    agent: Agent, stub: Stub, http_server: Server
) -> None:
    fixtures.serve_node(http_server, NEWEST_20)
    status, events = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 200, events
    assert "lock" not in events[0]["sources"]
    assert events[0]["warnings"] == []
    plan = next(e for e in events if e["event"] == "plan")
    assert [(f["id"], f["version"]) for f in plan["features"]] == [("node", NEWEST_20)]
    assert events[-1]["ok"] is True, events[-1]
    assert events[-1]["features"][0]["result"] == "installed"
    # Without a lock the upstream's checksum file verifies the download, as before.
    assert http_server.count(f"/dist/v{NEWEST_20}/SHASUMS256.txt") == 1
    assert stub.requests[LOCK_PATH] == 1  # its 404 is "no lock"
    await complete(agent, events[0])


async def test_a_plan_with_a_lock_body_is_pinned_to_the_lock(plain: Agent) -> None:
    body: dict[str, Any] = {"requests": ["node@20"], "target": TARGET}
    status, unlocked = await call_json(plain, "POST", "/v1/plan", body)
    assert status == 200, unlocked
    assert unlocked["features"][0]["version"] == NEWEST_20
    status, plan = await call_json(
        plain, "POST", "/v1/plan", {**body, "lock": json.loads(node_lock().dump())}
    )
    assert status == 200, plan
    [node] = plan["features"]
    assert node["version"] == "20.11.1"
    download = node["actions"][0]
    assert (download["action"], download["url"]) == ("download", NODE_URL)
    assert (download["sha256"], download["size"], download["locked"]) == (
        NODE_SHA,
        len(NODE),
        True,
    )
    assert "locked" not in unlocked["features"][0]["actions"][0]
    assert plan["warnings"] == []


async def test_ensure_with_a_lock_body_installs_the_locked_version(
    plain: Agent, http_server: Server
) -> None:
    body = {"requests": ["node@20"], "lock": json.loads(node_lock().dump())}
    status, events = await ensure(plain, body)
    assert status == 200, events
    plan = next(e for e in events if e["event"] == "plan")
    assert [(f["id"], f["version"]) for f in plan["features"]] == [("node", "20.11.1")]
    assert events[-1]["ok"] is True, events[-1]
    assert events[-1]["features"][0]["result"] == "installed"
    assert events[-1]["features"][0]["entry"].endswith("/node/20.11.1/x64")
    assert http_server.count(TARBALL) == 1


def _with_credentials() -> dict[str, Any]:
    url = f"https://user:{PASSWORD}@mirror.invalid/x.tgz"
    data: dict[str, Any] = json.loads(node_lock(url=url).dump())
    return data


@pytest.mark.parametrize("path", ["/v1/plan", "/v1/ensure"])
@pytest.mark.parametrize(
    ("lock", "problem"),
    [
        (
            _with_credentials(),
            "lock is not a usable lock file: features.'node'.'20.11.1'.'linux/x64/glibc'"
            ".artifacts[0].url holds credentials",
        ),
        (
            {**json.loads(node_lock().dump()), "lockVersion": 2},
            "lock is not a usable lock file: lockVersion is '2'; this agent reads version 1",
        ),
    ],
    ids=["credentials", "lock-version-2"],
)
async def test_a_bad_lock_body_is_a_400_naming_the_problem(
    plain: Agent, http_server: Server, path: str, lock: dict[str, Any], problem: str
) -> None:
    body: dict[str, Any] = {"requests": ["node@20"], "lock": lock}
    if path == "/v1/plan":
        body["target"] = TARGET
    status, answer = await call_json(plain, "POST", path, body)
    assert status == 400, answer
    assert answer["error"]["code"] == "validation_error"
    assert problem in answer["error"]["message"], answer
    assert PASSWORD not in json.dumps(answer)
    assert PASSWORD not in plain.logs()
    assert http_server.count(TARBALL) == 0
