"""The system method for real: GNU hello through apt on this host, as root.

Each test removes ``hello`` first if present and again afterwards, and uses its own
package cache folder (standing for the shared volume).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agent.catalog import loading, requests, resolver
from agent.config import paths
from agent.install.host import executor
from agent.platform import detect
from agent.platform.packagers import apt
from tests.support.agentproc import PYTHON, Starter

needs_apt = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None,
    reason="installs OS packages with apt: needs root on a Debian-family host",
)


def _remove_hello() -> None:
    subprocess.run(["apt-mark", "unhold", "hello"], capture_output=True, check=False, timeout=60)
    subprocess.run(
        ["apt-get", "purge", "-y", "-qq", "hello"],
        capture_output=True,
        check=False,
        timeout=300,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


@pytest.fixture
def no_hello() -> Iterator[None]:
    _remove_hello()
    yield
    _remove_hello()


def debs(cache: Path) -> list[str]:
    return sorted(p.name for p in Path(apt.archives(cache)).glob("hello_*.deb"))


def ensure_cli(
    tmp_path: Path, *labels: str, refresh: float = 3600
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cache": {"root": str(tmp_path / "store")},
                "installer": {
                    "package_cache": str(tmp_path / "volume" / "packages"),
                    "index_refresh_seconds": refresh,
                },
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_AGENT_")}
    return subprocess.run(
        [
            PYTHON,
            "-m",
            "agent",
            "ensure",
            "--local",
            *labels,
            "--format",
            "json",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )


@needs_apt
def test_hello_installs_and_a_second_host_fetches_no_deb(tmp_path: Path, no_hello: None) -> None:
    cache = tmp_path / "volume" / "packages"
    first = ensure_cli(tmp_path, "feature:hello")
    assert first.returncode == 0, first.stderr
    assert "hello" in first.stderr
    assert "Get:" in first.stderr
    ran = subprocess.run(["hello", "--version"], capture_output=True, text=True, check=True)
    assert "GNU Hello" in ran.stdout
    assert len(debs(cache)) == 1
    [system] = json.loads(first.stdout)["features"]
    assert system["id"] == "hello"
    assert system["manager"] == "apt"
    assert system["result"] == "installed"
    assert system["already_present"] is False
    assert system["check"] == "ok"

    # Another host (the package gone, the shared cache kept): apt takes the cached .deb.
    subprocess.run(["apt-get", "purge", "-y", "-qq", "hello"], check=True, capture_output=True)
    second = ensure_cli(tmp_path, "feature:hello")
    assert second.returncode == 0, second.stderr
    assert "Need to get 0 B/" in second.stderr
    assert "Get:" not in second.stderr
    assert "index is recent on this host; not refreshing" in second.stderr
    assert len(debs(cache)) == 1

    # Present already: nothing runs at all.
    third = ensure_cli(tmp_path, "feature:hello")
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["features"][0]["result"] == "present"


def _step(tmp_path: Path, packages: list[str]) -> dict[str, Any]:
    folder = tmp_path / "catalog" / "probe"
    folder.mkdir(parents=True)
    (folder / "feature.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "probe",
                "name": "Probe",
                "platforms": ["linux"],
                "install": [
                    {"method": "system", "platforms": ["linux"], "packages": {"apt": packages}}
                ],
            }
        )
    )
    catalog = loading.load([paths.bundled_catalog(), tmp_path / "catalog"])
    plan = resolver.resolve(
        [requests.parse("feature:probe")], catalog, detect.detect(), store_root=str(tmp_path)
    )
    [step] = plan.to_data()["features"]
    return dict(step)


def _settings(tmp_path: Path, refresh: float = 3600) -> executor.HostSettings:
    return executor.HostSettings(
        package_cache=tmp_path / "packages", index_refresh_seconds=refresh, lock_timeout=60
    )


def _no_fetch(url: str, dest: Path) -> None:
    raise AssertionError(f"nothing to fetch here, asked for {url}")


@needs_apt
def test_a_missing_package_is_named(tmp_path: Path) -> None:
    step = _step(tmp_path, ["runner-agent-no-such-package"])
    with pytest.raises(executor.SystemInstallError) as caught:
        executor.install(step, _settings(tmp_path), fetch=_no_fetch)
    message = str(caught.value)
    assert "installing probe system with apt failed" in message
    assert "apt has no package 'runner-agent-no-such-package'" in message


@needs_apt
def test_a_held_package_is_named(tmp_path: Path, no_hello: None) -> None:
    subprocess.run(["apt-mark", "hold", "hello"], check=True, capture_output=True)
    step = _step(tmp_path, ["hello"])
    with pytest.raises(executor.SystemInstallError) as caught:
        executor.install(step, _settings(tmp_path), fetch=_no_fetch)
    assert "apt will not change held package 'hello'" in str(caught.value)
    assert "apt-mark unhold hello" in str(caught.value)


@needs_apt
def test_a_refresh_that_cannot_fetch_is_reported_with_the_missing_package(
    tmp_path: Path,
) -> None:
    broken = Path("/etc/apt/sources.list.d/runner-agent-test-broken.sources")
    broken.write_text(
        "Types: deb\nURIs: http://127.0.0.1:9/debian\nSuites: bookworm\nComponents: main\n"
        "Trusted: yes\n"
    )
    try:
        step = _step(tmp_path, ["runner-agent-only-in-the-broken-repo"])
        with pytest.raises(executor.SystemInstallError) as caught:
            executor.install(step, _settings(tmp_path, refresh=0), fetch=_no_fetch)
    finally:
        broken.unlink()
    message = str(caught.value)
    assert "apt has no package 'runner-agent-only-in-the-broken-repo'" in message
    assert "apt-get update could not fetch http://127.0.0.1:9/debian" in message
    assert "Connection refused" in message


@needs_apt
def test_a_feature_without_a_check_asks_dpkg_and_installs_nothing(tmp_path: Path) -> None:
    # dpkg is installed wherever apt is; dpkg-query says so and apt never runs.
    step = _step(tmp_path, ["dpkg"])
    assert step["check"] is None
    lines: list[str] = []
    done = executor.install(step, _settings(tmp_path), fetch=_no_fetch, on_line=lines.append)
    assert done.already_present
    assert done.check == "ok: apt reports dpkg installed on this host"
    assert not done.refreshed
    assert lines == []


HOLD_LISTS_LOCK = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open("/var/lib/apt/lists/lock", os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
    """
)


@needs_apt
def test_a_held_apt_lock_is_waited_for_visibly(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LISTS_LOCK, "2"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        step = _step(tmp_path, ["hello"])
        step["actions"] = [a for a in step["actions"] if a.get("purpose") == "refresh"]
        step["check"] = None
        lines: list[str] = []
        done = executor.install(
            step, _settings(tmp_path, refresh=0), fetch=_no_fetch, on_line=lines.append
        )
    finally:
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    assert done.refreshed
    waits = [line for line in lines if "waiting for /var/lib/apt/lists/lock" in line]
    assert waits
    assert f"held by pid {holder.pid}" in waits[0]


@needs_apt
async def test_the_agent_installs_os_packages_itself_in_host_mode(
    start_agent: Starter, no_hello: None
) -> None:
    config = start_agent.base_config()
    config["cache"] = {"root": str(start_agent.workdir / "store")}
    config["installer"] = {
        "system_packages": "host",
        "package_cache": str(start_agent.workdir / "packages"),
    }
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=20, what="ready")
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://agent/v1/ensure", json={"requests": ["hello"]}) as resp,
    ):
        assert resp.status == 200
        events = [json.loads(line) async for line in resp.content if line.strip()]
    output = [e["line"] for e in events if e["event"] == "output"]
    assert any("hello" in line for line in output)  # apt's own lines, streamed
    [hello] = events[-1]["features"]
    assert (hello["result"], hello["method"]) == ("installed", "system")
    assert subprocess.run(["hello"], capture_output=True, text=True, check=True).stdout
    assert len(debs(Path(config["installer"]["package_cache"]))) == 1
