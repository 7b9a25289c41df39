"""Cache management through real agents sharing one store: the admin API, metrics, the
janitor lock across processes, and eviction that spares another process's running job."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.cli.client import request as unix_request
from agent.store import janitor, layout, locks
from tests.support import fixtures
from tests.support.agentproc import Agent, Starter
from tests.support.server import Server


def call(agent: Agent, method: str, target: str, body: Any = None, token: str | None = None):  # type: ignore[no-untyped-def]
    raw = json.dumps(body).encode() if body is not None else None
    return unix_request(agent.socket, method, target, token=token, body=raw)


def store_with(root: Path, server: Server, *versions: str, idle: float = 3600) -> layout.Store:
    for version in versions:
        fixtures.serve_node(server, version)
        fixtures.ensure_node(root, server, version)
        when = time.time() - idle  # last used an hour ago: eviction may take it
        os.utime(layout.Store(root).entry("node", version, "x64").receipt, (when, when))
        for path in downloads(layout.Store(root)):
            os.utime(path, (when, when))
    return layout.Store(root)


def downloads(store: layout.Store) -> list[Path]:
    return sorted(p for p in store.downloads.glob("??/*") if not p.name.startswith("."))


def keys(store: layout.Store) -> list[str]:
    return sorted(p.name for p in store.root.glob("node/*/*.complete"))


def runs(agent: Agent, result: str) -> float:
    return agent.metric(f'runner_agent_janitor_runs_total{{result="{result}"}}') or 0.0


def test_the_cache_endpoints_are_admin_only_and_metrics_sum_receipts(
    start_agent: Starter, http_server: Server
) -> None:
    store = store_with(start_agent.workdir / "store", http_server, "20.11.1", "22.21.1")
    (start_agent.workdir / "job.token").write_text("job-secret")
    (start_agent.workdir / "admin.token").write_text("admin-secret")
    config = start_agent.base_config(
        job_token_file=str(start_agent.workdir / "job.token"),
        admin_token_file=str(start_agent.workdir / "admin.token"),
    )
    config["cache"] = {"root": str(store.root), "size_budget": "5GiB"}
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.metric("runner_agent_cache_entries") == 2, what="the tally")

    for method, target in [
        ("GET", "/v1/cache"),
        ("POST", "/v1/cache/verify"),
        ("POST", "/v1/cache/gc"),
        ("POST", "/v1/cache/evict"),
    ]:
        status, body = call(agent, method, target, token="job-secret")
        assert status == 403, (target, body)
        assert body["error"]["code"] == "forbidden"
        assert call(agent, method, target)[0] == 401

    status, listing = call(agent, "GET", "/v1/cache", token="admin-secret")
    assert status == 200
    sizes = [e["size"] for e in listing["entries"]]
    assert [e["key"] for e in listing["entries"]] == ["node@20.11.1@x64", "node@22.21.1@x64"]
    assert [e["entry"] for e in listing["entries"]] == ["node/20.11.1/x64", "node/22.21.1/x64"]
    downloaded = sum(p.stat().st_size for p in downloads(store))
    assert sorted(d["sha256"] for d in listing["downloads"]) == [p.name for p in downloads(store)]
    assert listing["total"] == {
        "entries": 2,
        "bytes": sum(sizes) + downloaded,
        "entry_bytes": sum(sizes),
        "downloads": 2,
        "download_bytes": downloaded,
    }
    assert listing["budget"] == 5 * 1024**3
    assert agent.metric("runner_agent_cache_bytes") == sum(sizes) + downloaded
    assert agent.metric("runner_agent_cache_budget_bytes") == 5 * 1024**3

    status, verified = call(
        agent, "POST", "/v1/cache/verify", {"repair": False}, token="admin-secret"
    )
    assert (status, verified["clean"], verified["counts"]) == (200, True, {"ok": 2})
    status, bad = call(agent, "POST", "/v1/cache/evict", {"to": "ten gigs"}, token="admin-secret")
    assert status == 400
    assert bad["error"]["code"] == "validation_error"
    assert "'ten gigs' is not a size; expected bytes" in bad["error"]["message"]
    status, bad = call(agent, "POST", "/v1/cache/evict", {}, token="admin-secret")
    assert status == 400
    assert "the target size is required" in bad["error"]["message"]
    status, bad = call(agent, "POST", "/v1/cache/verify", {"repair": "yes please"}, "admin-secret")
    assert (status, bad["error"]["details"][0]["field"]) == (400, "repair")

    status, evicted = call(agent, "POST", "/v1/cache/evict", {"to": 0}, token="admin-secret")
    assert status == 200
    assert [r["entry"] for r in evicted["removed"] if r["kind"] == "entry"] == [
        "node/20.11.1/x64",
        "node/22.21.1/x64",
    ]
    assert [r["kind"] for r in evicted["removed"]][:2] == ["download", "download"]
    assert evicted["before"] == sum(sizes) + downloaded
    assert downloads(store) == []
    assert evicted["reached"] is True
    assert agent.metric("runner_agent_evictions_total") == 2
    assert agent.metric("runner_agent_cache_bytes") == 0
    assert runs(agent, "ok") == 2

    status, doc = call(agent, "GET", "/openapi.json")
    assert doc["paths"]["/v1/cache/evict"]["post"]["x-scope"] == "admin"
    assert "409" in doc["paths"]["/v1/cache/gc"]["post"]["responses"]


# Agent A's job: take an in-use lease on one entry, keep it alive, hold it until stdin
# closes (the job ends), then release it.
JOB = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent.store import inuse, layout

    store = layout.Store(Path(sys.argv[1]))
    handle = inuse.hold(store, [sys.argv[2]], agent_id="agent-a/1", job="build", ttl=2.0)
    handle.keep_alive(every=0.5)
    print("holding", flush=True)
    sys.stdin.read()
    handle.release()
    print("released", flush=True)
    """
)


def test_eviction_under_load_spares_an_entry_another_agents_job_uses(
    start_agent: Starter, http_server: Server
) -> None:
    store = store_with(start_agent.workdir / "store", http_server, "20.11.1", "22.21.1")
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    job = subprocess.Popen(
        [sys.executable, "-c", JOB, str(store.root), "node@20.11.1@x64"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert job.stdout is not None
        assert job.stdout.readline() == "holding\n"
        # Agent B: a budget below the leased entry alone, and a janitor pass twice a second.
        config = start_agent.base_config()
        config["cache"] = {
            "root": str(store.root),
            "size_budget": 1,
            "janitor_interval_seconds": 1,
        }
        agent = start_agent.start(config)
        agent.wait_for(lambda: agent.metric("runner_agent_evictions_total") == 1, timeout=15)
        assert keys(store) == ["x64.complete"]
        assert (store.root / "node" / "20.11.1" / "x64.complete").exists()
        # Passes go on for longer than the lease's ttl: its refreshes keep it live.
        before = runs(agent, "ok")
        agent.wait_for(lambda: runs(agent, "ok") >= before + 6, timeout=15, what="6 passes")
        status, done = call(agent, "POST", "/v1/cache/evict", {"to": 0})
        assert status == 200
        assert done["removed"] == []
        assert done["skipped"][0]["reason"] == "in use by job 'build' of agent agent-a/1"
        status, listing = call(agent, "GET", "/v1/cache")
        assert listing["entries"][0]["in_use"][0]["job"] == "build"
        assert (store.root / "node" / "20.11.1" / "x64" / "bin" / "node").exists()

        job.stdin.close()  # type: ignore[union-attr]
        assert job.stdout.readline() == "released\n"
        assert job.wait(10) == 0
        agent.wait_for(lambda: agent.metric("runner_agent_evictions_total") == 2, timeout=10)
        assert keys(store) == []
        assert not (store.root / "node" / "20.11.1" / "x64").exists()
    finally:
        if job.poll() is None:
            job.kill()
            job.wait(10)
        for pipe in (job.stdin, job.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


@contextlib.contextmanager
def take_janitor_lock(store: layout.Store) -> Iterator[None]:
    """The janitor lock, taken between the agents' passes (they run five times a second)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with janitor.exclusive(store, locks.PosixLocks(), what="the test"):
                yield
                return
        except janitor.Busy:
            assert time.monotonic() < deadline, "the agents never let go of the janitor lock"
            time.sleep(0.01)


def test_one_janitor_at_a_time_across_agents_counted(
    start_agent: Starter, http_server: Server
) -> None:
    store = store_with(start_agent.workdir / "store", http_server, "20.11.1")
    agents = []
    for _ in range(2):
        config = start_agent.base_config()
        config["cache"] = {"root": str(store.root), "janitor_interval_seconds": 1}
        agents.append(start_agent.start(config))
    with take_janitor_lock(store):
        time.sleep(0.1)  # a pass that just let go counts itself right after
        held = [runs(a, "ok") for a in agents]
        for agent in agents:
            agent.wait_for(lambda a=agent: runs(a, "skipped") >= 2, timeout=10, what="skips")
            status, body = call(agent, "POST", "/v1/cache/gc")
            assert status == 409
            assert body["error"]["code"] == "janitor_busy"
            assert f"pid {os.getpid()}" in body["error"]["message"]
        assert [runs(a, "ok") for a in agents] == held  # no pass while the test held it
    for agent in agents:
        agent.wait_for(lambda a=agent: runs(a, "ok") >= 5, timeout=10, what="passes")
    for agent in agents:  # every pass counted is in the janitor's log, and vice versa
        first = runs(agent, "ok")
        logged = [
            p
            for p in janitor.history(store)
            if p["agent"].endswith(f"/{agent.proc.pid}") and p["result"] == "ok"
        ]
        assert first <= len(logged) <= runs(agent, "ok") + 1
    start_agent.stop_all()
    passes = janitor.history(store)
    assert {p["agent"].split("/")[-1] for p in passes} == {str(a.proc.pid) for a in agents}
    spans = sorted((p["started"], p["finished"]) for p in passes)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two janitor passes overlapped"
