"""The ``store`` readiness condition: a store the agent cannot use keeps /readyz at 503,
saying why, before the first ensure fails on it."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.support.agentproc import Starter


def store_condition(body: Any) -> dict[str, Any]:
    found: dict[str, Any] = {c["name"]: c for c in body["conditions"]}["store"]
    return found


def test_a_ready_agent_names_its_store_and_its_free_space(start_agent: Starter) -> None:
    config = start_agent.base_config()
    agent = start_agent.start(config)
    status, body = agent.get("/readyz")
    assert status == 200
    store = store_condition(body)
    assert store["ok"] is True
    assert store["message"].startswith(f"{config['cache']['root']}: ")
    assert store["message"].endswith(" free")
    assert os.path.isfile(os.path.join(config["cache"]["root"], ".runner-agent", "format"))


def test_too_little_free_space_is_not_ready(start_agent: Starter) -> None:
    config = start_agent.base_config()
    config["cache"]["min_free_bytes"] = "1TiB"
    agent = start_agent.start(config, wait_ready=False)
    agent.wait_for(
        lambda: store_condition(agent.get("/readyz")[1]).get("message") != "checking",
        what="the first store check",
    )
    status, body = agent.get("/readyz")
    assert status == 503
    message = store_condition(body)["message"]
    assert "free, under cache.min_free_bytes (1.0 TiB)" in message
    assert "condition store is failing" in agent.logs()


@pytest.mark.usefixtures("needs_root")
def test_a_store_the_agent_cannot_write_is_not_ready(start_agent: Starter) -> None:
    config = start_agent.base_config()
    root = start_agent.workdir / "rootowned"
    root.mkdir(mode=0o755)
    config["cache"]["root"] = str(root / "store")
    run = start_agent.workdir / "run"
    run.mkdir()
    os.chown(run, 1001, 123)
    config["server"]["socket_path"] = str(run / "api.sock")
    agent = start_agent.start(config, wait_ready=False, user=(1001, 123))
    agent.wait_for(
        lambda: store_condition(agent.get("/readyz")[1]).get("message") != "checking",
        what="the first store check",
    )
    status, body = agent.get("/readyz")
    assert status == 503
    assert "cannot prepare the store at" in store_condition(body)["message"]
    assert "Permission denied" in store_condition(body)["message"]
