"""Shared fixtures and the CI policy.

- Under ``CI=true`` a skipped test is reported as a failure: CI runs as root with
  everything installed, so a skip there means a check silently did not happen.
- Every test fails if it leaves asyncio tasks pending.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import agentproc
from tests.support.server import Server

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"


def pytest_collectreport(report: pytest.CollectReport) -> None:
    # A module that skips itself at import (no docker, no root) is a skip too.
    if IN_CI and report.skipped:
        report.outcome = "failed"


@pytest.fixture(autouse=True)
async def _no_pending_tasks() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        names = ", ".join(t.get_name() for t in pending)
        pytest.fail(f"the test left asyncio tasks pending: {names}")


@pytest.fixture
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (setpriv to an unprivileged user, chown)")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A world-traversable scratch folder (pytest's tmp_path is 0700, which an
    unprivileged user could not enter), removed afterwards."""
    path = agentproc.make_workdir()
    try:
        yield path
    finally:
        agentproc.remove_tree(path)


@pytest.fixture
def start_agent(workdir: Path) -> Iterator[agentproc.Starter]:
    """A factory that starts real ``runner-agent serve`` processes and stops them after."""
    starter = agentproc.Starter(workdir)
    try:
        yield starter
    finally:
        starter.stop_all()


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A real HTTP server on 127.0.0.1; script it with ``http_server.route(path, *replies)``."""
    # A proxy from the environment (a CI runner's) must not sit between client and server.
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    with Server() as server:
        yield server


@pytest.fixture(scope="session")
def tool_cache_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the real @actions/tool-cache installed by npm (npm's own registry
    configuration), for the tests that run its ``find()`` against our layout."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("needs node and npm for the real @actions/tool-cache")
    folder = tmp_path_factory.mktemp("toolcache-npm")
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", "@actions/tool-cache@4"],
        cwd=folder,
        check=True,
        timeout=300,
        capture_output=True,
    )
    return folder
