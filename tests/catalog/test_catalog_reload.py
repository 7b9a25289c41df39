"""A real agent picks up a feature folder added under catalog.paths when it reloads."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp

from tests.catalog import factories
from tests.support.agentproc import Agent, Starter


def catalog_message(agent: Agent) -> str:
    _, body = agent.get("/readyz")
    conditions: dict[str, Any] = {c["name"]: c for c in body["conditions"]}
    return str(conditions["catalog"]["message"])


def test_a_new_feature_folder_is_picked_up_on_sighup(start_agent: Starter, tmp_path: Path) -> None:
    folder = tmp_path / "catalog"
    factories.write(folder, factories.archive_feature("first"))
    config = start_agent.base_config()
    config["catalog"] = {"bundled": False, "paths": [str(folder)]}
    agent = start_agent.start(config)
    agent.wait_for(lambda: "1 features" in catalog_message(agent), what="the first catalog")
    # The config file is untouched: only the folder changed.
    factories.write(folder, factories.archive_feature("second"))
    agent.signal(signal.SIGHUP)
    agent.wait_for(
        lambda: "2 features" in catalog_message(agent), what="the new folder after SIGHUP"
    )


async def test_the_features_answer_right_after_a_reload_holds_the_new_folder(
    start_agent: Starter, tmp_path: Path
) -> None:
    folder = tmp_path / "catalog"
    factories.write(folder, factories.archive_feature("first"))
    config = start_agent.base_config()
    config["catalog"] = {"bundled": False, "paths": [str(folder)]}
    agent = start_agent.start(config)
    agent.wait_for(lambda: "1 features" in catalog_message(agent), what="the first catalog")
    # Enough new manifests that loading them takes a while: an answer that came before
    # the catalog was in force would show.
    for n in range(200):
        factories.write(folder, factories.archive_feature(f"new{n:03}"))
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post("http://agent/v1/reload", json={"reason": "test"}) as resp:
            assert resp.status == 200
        # The reload has answered: the catalog it promised is the one served now.
        async with session.get("http://agent/v1/features") as resp:
            body = await resp.json()
    assert len(body["features"]) == 201
