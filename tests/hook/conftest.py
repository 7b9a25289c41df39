"""Fixtures of the hook's tests: a store laid out as the agent's, and the real
@actions/tool-cache package."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def make_entry(store: Path, name: str, version: str, arch: str = "x64") -> Path:
    """An entry ``name/version/arch`` with ``bin/<name>`` printing ``<name> <version>``."""
    entry = store / name / version / arch
    (entry / "bin").mkdir(parents=True)
    tool = entry / "bin" / name
    tool.write_text(f"#!/bin/sh\necho {name} {version}\n")
    tool.chmod(0o755)
    return entry


@pytest.fixture(scope="session")
def tool_cache_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the real @actions/tool-cache installed by npm."""
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
