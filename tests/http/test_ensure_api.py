"""POST /v1/ensure through a real agent over its real unix socket, with the archive from
the test's real HTTP server: streamed progress, coalescing, client disconnect, repeats,
scopes, and the install metrics."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.cli import ensuring as ensuring_cli
from agent.cli import progressview
from tests.support import fixtures
from tests.support.agentproc import Agent, Starter, free_port, run_cli
from tests.support.server import Reply, Server

BODY = fixtures.tar_gz({"bin/tool": (b"#!/bin/sh\necho tool 1.0.0\n", 0o755)}, top="tool-1.0.0")
ARCHIVE = "/x/tool-1.0.0.tar.gz"


def _config(starter: Starter, server: Server, **server_settings: Any) -> dict[str, Any]:
    fixtures.archive_catalog(starter.workdir / "catalog", "tool", BODY)
    config = starter.base_config(**server_settings)
    config["catalog"] = {"paths": [str(starter.workdir / "catalog")]}
    config["cache"] = {"root": str(starter.workdir / "store")}
    config["installer"] = {"mirrors": {"https://example.invalid/": server.url("/x/")}}
    return config


@pytest.fixture
def agent(start_agent: Starter, http_server: Server) -> Agent:
    running = start_agent.start(_config(start_agent, http_server))
    running.wait_for(lambda: running.get("/readyz")[0] == 200, what="ready")
    return running


async def ensure(agent: Agent, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://agent/v1/ensure", json=body) as resp,
    ):
        if resp.content_type != "application/x-ndjson":
            return resp.status, [await resp.json()]
        lines = [json.loads(line) async for line in resp.content if line.strip()]
        return resp.status, lines


async def test_progress_streams_and_the_result_says_what_to_export(
    agent: Agent, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY))
    status, events = await ensure(agent, {"requests": ["tool"]})
    assert status == 200
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["plan", "queued"]
    assert "downloading" in kinds
    assert "extracting" in kinds
    assert kinds[-2:] == ["done", "result"]
    downloaded = [e for e in events if e["event"] == "downloading"][-1]
    assert downloaded["bytes"] == downloaded["total"] == len(BODY)
    result = events[-1]
    assert result["ok"] is True
    [tool] = result["features"]
    assert tool["result"] == "installed"
    entry = Path(tool["entry"])
    assert tool["path"] == [str(entry / "bin")]
    assert result["path"] == [str(entry / "bin")]
    assert (entry.parent / f"{entry.name}.complete").exists()

    # The same request again: a cache hit, nothing downloaded.
    status, again = await ensure(agent, {"requests": ["tool"]})
    assert again[-1]["features"][0]["result"] == "hit"
    assert http_server.count(ARCHIVE) == 1
    assert agent.metric('runner_agent_cache_requests_total{result="hit"}') == 1
    assert agent.metric('runner_agent_cache_requests_total{result="miss"}') == 1
    assert (
        agent.metric('runner_agent_installs_total{feature="tool",method="archive",result="ok"}')
        == 1
    )
    assert agent.metric("runner_agent_download_bytes_total") == len(BODY)


async def test_identical_concurrent_requests_coalesce_into_one_install(
    agent: Agent, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY, delay=1.0))
    results = await asyncio.gather(*(ensure(agent, {"requests": ["tool"]}) for _ in range(4)))
    assert http_server.count(ARCHIVE) == 1
    for status, events in results:
        assert status == 200
        assert events[-1]["ok"] is True
        assert events[-1]["features"][0]["result"] == "installed"
    assert (
        agent.metric('runner_agent_installs_total{feature="tool",method="archive",result="ok"}')
        == 1
    )


async def test_a_client_that_disconnects_does_not_cancel_the_install(
    agent: Agent, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY, delay=1.5))
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://agent/v1/ensure", json={"requests": ["tool"]}) as resp,
    ):
        async for line in resp.content:
            if json.loads(line)["event"] == "queued":
                break
        # Leaving the block closes the connection mid-install.
    _, events = await ensure(agent, {"requests": ["tool"]})
    assert events[-1]["ok"] is True
    assert http_server.count(ARCHIVE) == 1
    _, health = agent.get("/healthz")
    assert health["status"] == "ok"


async def test_bad_requests_are_errors_before_any_stream(agent: Agent) -> None:
    status, [body] = await ensure(agent, {"requests": ["no-such-feature"]})
    assert status == 422
    assert "no-such-feature" in body["error"]["message"]
    status, [body] = await ensure(agent, {"requests": ["tool"], "options": {"node": {"a": "b"}}})
    assert status == 400
    assert "options for 'node'" in body["error"]["message"]
    status, [body] = await ensure(agent, {"requests": ["feature:tool;$(reboot)=1"]})
    assert status == 400
    status, [body] = await ensure(agent, {})
    assert status == 400
    assert "nothing to ensure" in body["error"]["message"]


async def test_a_failed_install_ends_the_stream_with_the_reason(
    agent: Agent, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=b"not the archive"))
    status, events = await ensure(agent, {"requests": ["tool"]})
    assert status == 200
    failed = next(e for e in events if e["event"] == "failed")
    assert failed["step"] == "download"
    assert "sha256 mismatch" in failed["error"]
    assert events[-1]["ok"] is False
    assert events[-1]["features"][0]["result"] == "failed"


async def test_the_job_token_may_ensure_but_not_administer(
    start_agent: Starter, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY))
    (start_agent.workdir / "job.token").write_text("job-token\n")
    (start_agent.workdir / "admin.token").write_text("admin-token\n")
    tcp = f"127.0.0.1:{free_port()}"
    config = _config(
        start_agent,
        http_server,
        api_tcp_address=tcp,
        job_token_file=str(start_agent.workdir / "job.token"),
        admin_token_file=str(start_agent.workdir / "admin.token"),
    )
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    job = {"Authorization": "Bearer job-token"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://{tcp}/v1/ensure", json={"requests": ["tool"]}) as resp:
            assert resp.status == 401
        async with session.post(
            f"http://{tcp}/v1/ensure", json={"requests": ["tool"]}, headers=job
        ) as resp:
            assert resp.status == 200
            lines = [json.loads(line) async for line in resp.content if line.strip()]
            assert lines[-1]["ok"] is True
        async with session.post(f"http://{tcp}/v1/reload", json={}, headers=job) as resp:
            assert resp.status == 403


def test_the_cli_asks_the_running_agent_and_prints_plain_progress(
    agent: Agent, http_server: Server, tmp_path: Path
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY))
    proc = run_cli(
        "ensure", "tool", "--socket", str(agent.socket), "--format", "json",
        "--config", str(agent.config),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert result["features"][0]["result"] == "installed"
    lines = proc.stderr.splitlines()
    assert "tool 1.0.0: queued" in lines
    downloads = [line for line in lines if line.startswith("tool 1.0.0: downloading ")]
    assert downloads, lines
    assert all(" B/" in line for line in downloads), downloads  # a small file in bytes
    assert any(line.startswith("tool 1.0.0: done installed in") for line in lines)

    github_path, github_env = tmp_path / "path", tmp_path / "env"
    proc = run_cli(
        "ensure", "tool", "--socket", str(agent.socket), "--format", "github",
        "--config", str(agent.config),
        env={"GITHUB_PATH": str(github_path), "GITHUB_ENV": str(github_env)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert github_path.read_text() == result["path"][0] + "\n"

    proc = run_cli("ensure", "tool", "--socket", str(tmp_path / "nobody.sock"))
    assert proc.returncode == 3
    assert "use --local" in proc.stderr

    proc = run_cli("ensure", "no-such-thing", "--socket", str(agent.socket))
    assert proc.returncode == 1
    assert "no-such-thing" in proc.stderr


def test_github_env_values_with_newlines_take_the_heredoc_form() -> None:
    assert ensuring_cli.github_env_line("A", "plain") == "A=plain\n"
    text = ensuring_cli.github_env_line("B", "two\nlines")
    head, first, second, closing, end = text.split("\n")
    assert head.startswith("B<<ghadelimiter_")
    assert (first, second, end) == ("two", "lines", "")
    assert closing == head.split("<<")[1]


async def test_preinstall_holds_readiness_until_its_features_are_installed(
    start_agent: Starter, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY, delay=1.5))
    config = _config(start_agent, http_server)
    config["features"] = {"preinstall": ["tool"]}
    agent = start_agent.start(config)
    _, ready = agent.wait_for(
        lambda: (
            (r := agent.get("/readyz"))[0] == 503
            and any(c["name"] == "preinstall" for c in r[1]["conditions"])
            and r
        ),
        what="the preinstall condition",
    )
    preinstall = next(c for c in ready["conditions"] if c["name"] == "preinstall")
    assert preinstall["ok"] is False
    assert "installing tool" in preinstall["message"]
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=20, what="ready")
    _, ready = agent.get("/readyz")
    preinstall = next(c for c in ready["conditions"] if c["name"] == "preinstall")
    assert preinstall == {**preinstall, "ok": True, "message": "ready: tool 1.0.0"}
    assert http_server.count(ARCHIVE) == 1
    _, events = await ensure(agent, {"requests": ["tool"]})
    assert events[-1]["features"][0]["result"] == "hit"


async def test_an_empty_body_names_the_missing_fields(agent: Agent) -> None:
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://agent/v1/plan") as resp,
    ):
        assert resp.status == 400
        body = await resp.json()
    assert body["error"]["details"][0]["field"] == "target"


async def call_json(agent: Agent, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, f"http://agent{path}", json=body) as resp,
    ):
        return resp.status, await resp.json()


async def post_ndjson(agent: Agent, path: str, body: dict[str, Any]) -> tuple[int, list[Any]]:
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"http://agent{path}", json=body) as resp,
    ):
        if resp.content_type != "application/x-ndjson":
            return resp.status, [await resp.json()]
        return resp.status, [json.loads(line) async for line in resp.content if line.strip()]


def job_start(runner: str = "runner-1", **extra: Any) -> dict[str, Any]:
    """A job-started body as the hook sends it."""
    return {
        "runner_name": runner,
        "run_id": "17",
        "run_attempt": 1,
        "job": "build",
        "repository": "octo/repo",
        "claim": "c" * 40,
        **extra,
    }


async def test_a_jobs_entries_are_leased_until_it_ends(agent: Agent, http_server: Server) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY))
    status, opened = await post_ndjson(agent, "/v1/jobs", job_start())
    assert status == 200, opened
    job = {"id": opened[0]["id"], "secret": opened[0]["secret"]}
    _, events = await ensure(agent, {"requests": ["tool"], "job": job})
    assert events[0]["event"] == "job"
    assert "secret" not in events[0]
    _, events = await ensure(agent, {"requests": ["tool"], "job": job})  # the same job again
    entry = Path(events[-1]["features"][0]["entry"])
    leases = list((agent.config.parent / "store" / ".runner-agent" / "inuse").glob("*.json"))
    assert len(leases) == 1
    lease = json.loads(leases[0].read_text())
    assert lease["job"] == job["id"]
    assert lease["keys"] == ["tool@1.0.0@x64"]

    status, evicted = await call_json(agent, "POST", "/v1/cache/evict", {"to": 0})
    assert status == 200, evicted
    assert entry.is_dir()  # the job's lease kept it
    [kept] = [s for s in evicted["skipped"] if s["kind"] == "entry"]
    assert kept["reason"].startswith("in use by ")
    assert job["id"] in kept["reason"]

    path = f"/v1/jobs/{job['id']}/complete"
    status, wrong = await call_json(agent, "POST", path, {"secret": "x" * 43})
    assert status == 403, wrong
    status, released = await call_json(agent, "POST", path, {"secret": job["secret"]})
    assert status == 200, released
    assert released == {
        "id": job["id"],
        "state": "completed",
        "result": "unknown",
        "released": 1,
        "already": False,
    }
    assert not list(leases[0].parent.glob("*.json"))
    status, again = await call_json(agent, "POST", path, {"secret": job["secret"]})
    assert (status, again["already"], again["released"]) == (200, True, 0)
    status, ended = await ensure(agent, {"requests": ["tool"], "job": job})
    assert (status, ended[0]["error"]["code"]) == (409, "job_ended")

    # Released: only the just-used grace (evicting.MIN_IDLE) still protects it.
    status, evicted = await call_json(agent, "POST", "/v1/cache/evict", {"to": 0})
    assert status == 200, evicted
    [kept] = [s for s in evicted["skipped"] if s["kind"] == "entry"]
    assert kept["reason"].startswith("used ")


async def test_repeating_after_the_agent_was_killed_mid_install_gives_the_same_result(
    start_agent: Starter, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY, delay=1.0))
    config = _config(start_agent, http_server)
    first = start_agent.start(config)
    first.wait_for(lambda: first.get("/readyz")[0] == 200, what="ready")
    connector = aiohttp.UnixConnector(path=str(first.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://agent/v1/ensure", json={"requests": ["tool"]}) as resp,
    ):
        async for line in resp.content:
            if json.loads(line)["event"] == "queued":
                first.proc.kill()  # SIGKILL, mid-install
                break
    first.proc.wait(timeout=10)
    http_server.route(ARCHIVE, Reply(body=BODY))
    second = start_agent.start(config)
    second.wait_for(lambda: second.get("/readyz")[0] == 200, what="ready")
    _, events = await ensure(second, {"requests": ["tool"]})
    assert events[-1]["ok"] is True
    [tool] = events[-1]["features"]
    assert tool["result"] in ("installed", "hit")
    entry = Path(tool["entry"])
    assert [p.name for p in entry.rglob("tool") if p.is_file()] == ["tool"]
    assert (entry.parent / f"{entry.name}.complete").exists()
    _, again = await ensure(second, {"requests": ["tool"]})
    assert again[-1]["features"][0] == {
        **tool,
        "result": "hit",
        "seconds": again[-1]["features"][0]["seconds"],
    }


def test_the_terminal_view_redraws_one_line_per_feature() -> None:
    out = io.StringIO()
    view = progressview.View(out, tty=True)
    view.event(
        {"event": "plan", "features": [{"id": "a", "version": "1"}, {"id": "b", "version": "2"}]}
    )
    view.event({"event": "downloading", "feature": "a", "bytes": 512, "total": 1024})
    view.event({"event": "done", "feature": "b", "result": "hit", "seconds": 0.01})
    view.close()
    text = out.getvalue()
    assert "\x1b[2F" in text  # moved back up over its two lines to redraw them
    last = text.rsplit("\x1b[2F", 1)[-1]
    assert "a 1" in last
    assert "[############............] downloading" in last
    assert "b 2" in last
    assert "done hit in 0.0 s" in last


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_line = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


async def test_a_worker_that_dies_fails_its_install_and_the_next_one_works(
    agent: Agent, http_server: Server
) -> None:
    http_server.route(ARCHIVE, Reply(body=BODY, delay=2.0))
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://agent/v1/ensure", json={"requests": ["tool"]}) as resp,
    ):
        events: list[dict[str, Any]] = []
        async for line in resp.content:
            events.append(json.loads(line))
            if events[-1]["event"] == "queued":
                await asyncio.sleep(0.8)  # the worker is up, waiting for the archive
                workers = [
                    c
                    for c in _children(agent.proc.pid)
                    if b"multiprocessing" in Path(f"/proc/{c}/cmdline").read_bytes()
                    and b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()
                ]
                assert workers
                for worker in workers:
                    os.kill(worker, signal.SIGKILL)  # as the OOM killer would
    failed = next(e for e in events if e["event"] == "failed")
    assert failed["step"] == "worker"
    assert "worker process died" in failed["error"]
    http_server.route(ARCHIVE, Reply(body=BODY))
    _, again = await ensure(agent, {"requests": ["tool"]})
    assert again[-1]["ok"] is True
    assert again[-1]["features"][0]["result"] == "installed"
