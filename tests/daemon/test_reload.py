"""Live reload of the real daemon: SIGHUP, file changes, ConfigMap symlink swaps, bad files."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.agentproc import Agent, Starter, free_port


def status(agent: Agent) -> dict[str, Any]:
    import http.client
    import json
    import socket

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(agent.socket))

    conn = Conn("agent", timeout=5)
    conn.request("GET", "/v1/status")
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body  # type: ignore[no-any-return]


def generation(agent: Agent) -> int:
    return int(status(agent)["config"]["generation"])


def rewrite(path: Path, config: dict[str, Any]) -> None:
    # Write then rename, as editors and kubelet do, so the agent never reads half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    os.replace(tmp, path)


def test_sighup_reloads_and_applies_the_log_level(start_agent: Starter) -> None:
    config = start_agent.base_config()
    config["logging"]["level"] = "warning"
    agent = start_agent.start(config)
    config["logging"]["level"] = "debug"
    rewrite(agent.config, config)  # type: ignore[arg-type]
    agent.signal(signal.SIGHUP)
    agent.wait_for(lambda: generation(agent) == 2, what="generation 2")
    assert agent.metric("runner_agent_config_generation") == 2.0
    assert agent.metric("runner_agent_config_reloads_total") == 1.0
    # The new level is live: a debug record now appears (a failing condition logs at info,
    # and reloading logs at info; both were hidden at warning).
    records = agent.log_records()
    reloaded = [r for r in records if r["message"] == "config reloaded as generation 2"]
    assert reloaded
    assert reloaded[0]["changed"] == ["logging.level"]


def test_a_changed_file_is_reloaded_without_a_signal(start_agent: Starter) -> None:
    config = start_agent.base_config(config_poll_seconds=0.1)
    agent = start_agent.start(config)
    config["logging"]["format"] = "text"
    rewrite(agent.config, config)  # type: ignore[arg-type]
    agent.wait_for(lambda: generation(agent) == 2, what="reload on change")


def test_a_configmap_symlink_swap_is_followed(start_agent: Starter) -> None:
    # The layout kubelet makes: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>
    mount = start_agent.workdir / "configmap"
    first, second = mount / "..2026_11_27_1", mount / "..2026_11_27_2"
    first.mkdir(parents=True)
    second.mkdir()
    config = start_agent.base_config(config_poll_seconds=0.1)
    (first / "config.yaml").write_text(yaml.safe_dump(config))
    (mount / "..data").symlink_to(first.name)
    (mount / "config.yaml").symlink_to("..data/config.yaml")
    agent = start_agent.start(config, config_path=mount / "config.yaml")
    config["logging"]["level"] = "error"
    (second / "config.yaml").write_text(yaml.safe_dump(config))
    (mount / "..data_tmp").symlink_to(second.name)
    os.replace(mount / "..data_tmp", mount / "..data")
    agent.wait_for(lambda: generation(agent) == 2, what="reload after symlink swap")


def test_a_bad_file_keeps_the_old_config_and_counts_a_failure(start_agent: Starter) -> None:
    config = start_agent.base_config(config_poll_seconds=0.1)
    agent = start_agent.start(config)
    agent.config.write_text("logging:\n  level: loud\n")  # type: ignore[union-attr]
    agent.wait_for(
        lambda: agent.metric("runner_agent_config_reload_failures_total") == 1.0,
        what="a counted failure",
    )
    errors = [r for r in agent.log_records() if r["level"] == "error"]
    assert len(errors) == 1
    assert "keeping generation 1" in errors[0]["message"]
    assert "logging.level: got 'loud'" in errors[0]["message"]
    assert generation(agent) == 1
    assert agent.get("/readyz")[0] == 200  # the old config is still good and in force
    config["logging"]["level"] = "info"
    rewrite(agent.config, config)  # type: ignore[arg-type]
    agent.wait_for(lambda: generation(agent) == 2, what="recovery")


def test_a_deleted_file_keeps_the_old_config(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config(config_poll_seconds=0.1))
    agent.config.unlink()  # type: ignore[union-attr]
    agent.wait_for(
        lambda: agent.metric("runner_agent_config_reload_failures_total") == 1.0,
        what="a counted failure",
    )
    assert "does not exist" in agent.logs()
    assert agent.get("/healthz")[0] == 200
    assert generation(agent) == 1


def test_a_sighup_storm_is_coalesced_and_serving_goes_on(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    for _ in range(10):  # ten signals in a burst, well inside one second
        agent.signal(signal.SIGHUP)
    assert agent.get("/healthz")[0] == 200
    agent.wait_for(lambda: agent.metric("runner_agent_config_reloads_total"), what="reloads")
    time.sleep(0.5)
    reloads = agent.metric("runner_agent_config_reloads_total")
    assert reloads is not None
    assert reloads <= 3  # one running, one queued; never one per signal
    assert agent.metric("runner_agent_config_reload_failures_total") == 0.0
    for _ in range(10):  # and ten more, spread over a second, while serving
        agent.signal(signal.SIGHUP)
        time.sleep(0.1)
        assert agent.get("/healthz")[0] == 200
    assert agent.proc.poll() is None


def test_a_listen_address_change_needs_a_restart(start_agent: Starter) -> None:
    config = start_agent.base_config()
    agent = start_agent.start(config)
    config["server"]["metrics_address"] = f"127.0.0.1:{free_port()}"
    rewrite(agent.config, config)  # type: ignore[arg-type]
    agent.signal(signal.SIGHUP)
    agent.wait_for(lambda: generation(agent) == 2, what="reload")
    assert status(agent)["config"]["pending_restart"] == ["server.metrics_address"]
    assert agent.metric("runner_agent_config_restart_required") == 1.0
    assert agent.get("/healthz")[0] == 200  # still on the old port
    assert "need a restart" in agent.logs()


async def test_api_reload_of_a_bad_file_is_a_422_with_the_problems(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    agent.config.write_text("server: [\n")  # type: ignore[union-attr]
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://agent/v1/reload", json={"reason": "test"}) as resp,
    ):
        assert resp.status == 422
        body = await resp.json()
    assert body["error"]["code"] == "config_invalid"
    assert "invalid YAML" in body["error"]["details"]["problems"][0]


def test_a_fifo_swapped_in_for_the_file_fails_the_reload_and_shutdown_stays_prompt(
    start_agent: Starter,
) -> None:
    agent = start_agent.start(start_agent.base_config(config_poll_seconds=0.1))
    assert agent.config is not None
    agent.config.unlink()
    os.mkfifo(agent.config)
    agent.wait_for(
        lambda: "not a regular file" in agent.logs(), what="the reload to refuse the FIFO"
    )
    assert agent.get("/healthz")[0] == 200
    started = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.wait(15) == 0
    assert time.monotonic() - started < 5


def test_a_reload_that_conflicts_with_the_running_listeners_is_refused(
    start_agent: Starter,
) -> None:
    (start_agent.workdir / "admin.token").write_text("admin-token")
    config = start_agent.base_config(
        api_tcp_address=f"127.0.0.1:{free_port()}",
        admin_token_file=str(start_agent.workdir / "admin.token"),
    )
    agent = start_agent.start(config)
    del config["server"]["api_tcp_address"], config["server"]["admin_token_file"]
    rewrite(agent.config, config)  # type: ignore[arg-type]
    agent.signal(signal.SIGHUP)
    agent.wait_for(
        lambda: agent.metric("runner_agent_config_reload_failures_total") == 1.0,
        what="a refused reload",
    )
    assert "only a restart changes" in agent.logs()
    # The reloader lives on: a later good file still loads.
    config["server"]["api_tcp_address"] = f"127.0.0.1:{free_port()}"
    config["server"]["admin_token_file"] = str(start_agent.workdir / "admin.token")
    rewrite(agent.config, config)  # type: ignore[arg-type]
    agent.signal(signal.SIGHUP)
    agent.wait_for(lambda: agent.metric("runner_agent_config_reloads_total") == 1.0, what="reload")


def test_a_rotated_token_takes_effect_without_a_signal(start_agent: Starter) -> None:
    token = start_agent.workdir / "job.token"
    token.write_text("first")
    agent = start_agent.start(
        start_agent.base_config(job_token_file=str(token), config_poll_seconds=0.1)
    )
    new = start_agent.workdir / "job.token.new"
    new.write_text("second")
    os.replace(new, token)
    agent.wait_for(
        lambda: agent.metric("runner_agent_config_reloads_total") == 1.0, what="token reload"
    )
    assert "tokens" in next(
        r["changed"] for r in agent.log_records() if r["message"].startswith("config reloaded")
    )
