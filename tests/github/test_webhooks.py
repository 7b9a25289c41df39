"""GitHub webhooks through a real agent: signatures, replays, sizes, and a queued job's
team config pre-warmed before any job asks."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.github.stub import SHA, Stub, fixture
from tests.http.test_ensure_api import BODY, ensure
from tests.support import fixtures
from tests.support.agentproc import Agent, Starter, free_port, http_get
from tests.support.server import Reply, Server

SECRET = b"webhook-secret-for-tests"
FEATURES = ("tool", "tool2", "tool3")


@pytest.fixture
def agent(start_agent: Starter, http_server: Server, stub: Stub, tmp_path: Path) -> Agent:
    for ident in FEATURES:
        fixtures.archive_catalog(start_agent.workdir / "catalog", ident, BODY)
        http_server.route(f"/x/{ident}-1.0.0.tar.gz", Reply(body=BODY))
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    (tmp_path / "token").write_text(stub.job_token)
    config = start_agent.base_config(webhook_address=f"127.0.0.1:{free_port()}")
    config["catalog"] = {"paths": [str(start_agent.workdir / "catalog")]}
    config["cache"] = {"root": str(start_agent.workdir / "store")}
    config["installer"] = {"mirrors": {"https://example.invalid/": http_server.url("/x/")}}
    config["github"] = {
        "api_url": stub.url,
        "token_file": str(tmp_path / "token"),
        "webhook_secret_file": str(tmp_path / "secret"),
        "scale_sets": {"arc-tools": ["feature:tool2"]},
    }
    running = start_agent.start(config)
    running.wait_for(lambda: running.get("/readyz")[0] == 200, what="ready")
    running.extra["webhooks"] = "http://" + config["server"]["webhook_address"]
    return running


def deliver(
    agent: Agent,
    payload: Any,
    *,
    event: str = "workflow_job",
    delivery: str = "d-1",
    sign: bytes | None = SECRET,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
               "Content-Type": "application/json"}  # fmt: skip
    if sign is not None:
        headers["X-Hub-Signature-256"] = (
            "sha256=" + hmac.new(sign, body, hashlib.sha256).hexdigest()
        )
    request = urllib.request.Request(  # noqa: S310 - loopback
        agent.extra["webhooks"] + "/v1/webhooks/github", data=body, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"{}")


def queued(labels: list[str] | None = None) -> dict[str, Any]:
    payload = copy.deepcopy(fixture("workflow-job-queued.json"))
    payload["repository"]["full_name"] = "octo/repo"
    payload["workflow_job"]["head_sha"] = SHA
    if labels is not None:
        payload["workflow_job"]["labels"] = labels
    return payload


async def until(predicate: Any, what: str, agent: Agent, timeout: float = 30) -> None:
    """Wait without blocking the loop: the GitHub stub answers from it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; log:\n{agent.logs()[-4000:]}")
        await asyncio.sleep(0.1)


def metric(agent: Agent, line: str) -> bool:
    return line in http_get(agent.base + "/metrics")[1].decode()


async def test_a_queued_job_is_prewarmed_and_its_ensure_is_a_hit(agent: Agent, stub: Stub) -> None:
    stub.files[("octo/repo", SHA, ".github/runner-config.yml")] = "features: [tool, tool2, tool3]\n"
    status, answer = deliver(agent, queued())
    assert (status, answer["result"]) == (202, "accepted"), answer
    store = agent.config.parent / "store"  # type: ignore[union-attr]
    # Done when the pre-warmer counted all three (an entry is complete on disk a moment
    # before its install has ended: an ensure then would join it, not hit it).
    await until(
        lambda: metric(agent, 'runner_agent_prewarm_installs_total{result="installed"} 3.0'),
        "the three features pre-warmed",
        agent,
    )
    assert all((store / f / "1.0.0" / "x64.complete").exists() for f in FEATURES)
    _, events = await ensure(agent, {"requests": list(FEATURES)})
    assert [f["result"] for f in events[-1]["features"]] == ["hit", "hit", "hit"]
    assert metric(
        agent, 'runner_agent_webhook_deliveries_total{event="workflow_job",result="accepted"} 1.0'
    )


async def test_a_scale_sets_menu_and_feature_labels_are_prewarmed(agent: Agent, stub: Stub) -> None:
    status, _ = deliver(agent, queued(["arc-tools", "feature:tool3"]), delivery="d-2")
    assert status == 202
    store = agent.config.parent / "store"  # type: ignore[union-attr]
    await until(
        lambda: all((store / f / "1.0.0" / "x64.complete").exists() for f in ("tool2", "tool3")),
        "the menu and the label pre-warmed",
        agent,
    )
    assert not (store / "tool").exists()


@pytest.mark.parametrize(
    ("sign", "expected"), [(None, "no signature"), (b"wrong-secret", "a bad signature")]
)
def test_an_unsigned_or_badly_signed_delivery_is_refused(
    agent: Agent, sign: bytes | None, expected: str
) -> None:
    status, answer = deliver(agent, queued(), sign=sign)
    assert status == 401, expected
    assert answer["result"] == "unauthorized"
    time.sleep(0.3)
    assert not (agent.config.parent / "store" / "tool").exists()  # type: ignore[union-attr]


def test_a_replayed_delivery_is_not_acted_on_twice(agent: Agent) -> None:
    assert deliver(agent, {}, event="ping", delivery="d-9")[0] == 200
    status, answer = deliver(agent, {}, event="ping", delivery="d-9")
    assert (status, answer["result"]) == (200, "duplicate")


def test_a_10_mib_body_is_refused_before_it_is_read(agent: Agent) -> None:
    status, answer = deliver(agent, None, raw=b"x" * (10 * 1024 * 1024))
    assert status == 413
    assert answer["result"] == "too_large"


def test_other_events_and_actions_are_ignored(agent: Agent) -> None:
    assert deliver(agent, {"ref": "x"}, event="push", delivery="d-3")[1]["result"] == "ignored"
    unassigned = fixture("workflow-job-in-progress.json")
    unassigned["workflow_job"]["runner_name"] = None  # names no runner: nothing to note
    status, answer = deliver(agent, unassigned, delivery="d-4")
    assert (status, answer["result"]) == (202, "ignored")
    status, answer = deliver(agent, None, raw=b"[1, 2", delivery="d-5")
    assert (status, answer["result"]) == (400, "bad_body")


def test_a_malformed_signature_is_refused_before_the_body_is_read(agent: Agent) -> None:
    body = json.dumps(queued()).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback
        agent.extra["webhooks"] + "/v1/webhooks/github",
        data=body,
        headers={"X-GitHub-Event": "workflow_job", "X-Hub-Signature-256": "sha256=zz\u00e9"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - loopback
    info.value.close()
    assert info.value.code == 401


def test_a_signed_body_replayed_under_a_new_id_is_a_duplicate(agent: Agent) -> None:
    payload = {"zen": "Keep it logically awesome."}
    assert deliver(agent, payload, event="ping", delivery="d-10")[0] == 200
    status, answer = deliver(agent, payload, event="ping", delivery="d-11")
    assert (status, answer["result"]) == (200, "duplicate")


def in_progress(
    action: str = "in_progress", job_id: int = 289782451, labels: tuple[str, ...] = ("arc",)
) -> dict[str, Any]:
    payload = copy.deepcopy(fixture("workflow-job-in-progress.json"))
    payload["action"] = action
    payload["repository"]["full_name"] = "octo/repo"
    payload["workflow_job"].update(
        id=job_id,
        run_id=17,
        runner_name="runner-1",
        runner_group_name="arc-runners",  # the published one ran on GitHub's own runners
        labels=[*labels, "feature:tool"],
    )
    return payload


async def test_an_in_progress_delivery_names_the_runner_so_its_job_lists_nothing(
    agent: Agent, stub: Stub
) -> None:
    from tests.github.test_job_team import JOBS, complete, start
    from tests.http.test_ensure_api import post_ndjson

    status, answer = deliver(agent, in_progress(), delivery="d-20")
    assert (status, answer["result"]) == (202, "accepted"), answer
    status, events = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 200, events
    assert events[0]["sources"] == {"job labels": ["tool"]}
    assert events[0].get("warnings", []) == []  # trusted: GitHub said it runs here
    assert stub.requests[JOBS] == 0
    await complete(agent, events[0])
    # The runner finished that job. Its next start (a reused runner, the same run) is not
    # answered with it, even after a late in_progress of it: GitHub is asked, and lists
    # nothing running there.
    late = in_progress(labels=("arc", "late"))
    assert deliver(agent, late, delivery="d-21")[0] == 202
    status, events = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 200, events
    assert stub.requests[JOBS] == 1
    assert events[0]["sources"] == {"runner menu": []}
    await complete(agent, events[0])
    # The run's next job on the runner, noted by its delivery: answered with no listing,
    # and another job's completion does not take its note away.
    assert deliver(agent, in_progress(job_id=289782452), delivery="d-22")[0] == 202
    assert deliver(agent, in_progress("completed", job_id=1), delivery="d-23")[0] == 202
    status, events = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 200, events
    assert events[0]["sources"] == {"job labels": ["tool"]}
    assert stub.requests[JOBS] == 1
    await complete(agent, events[0])


def test_a_github_hosted_runners_delivery_is_not_noted(agent: Agent) -> None:
    hosted = in_progress()
    hosted["workflow_job"]["runner_group_name"] = "GitHub Actions"
    status, answer = deliver(agent, hosted, delivery="d-30")
    assert (status, answer["result"]) == (202, "ignored"), answer
    store = agent.config.parent / "store"  # type: ignore[union-attr]
    assert not (store / ".runner-agent" / "notes" / "running").exists()
