"""Fixtures of the hook's tests: a store laid out as the agent's (the real
@actions/tool-cache package is tests/conftest.py's ``tool_cache_module``)."""

from __future__ import annotations

from pathlib import Path


def make_entry(store: Path, name: str, version: str, arch: str = "x64") -> Path:
    """An entry ``name/version/arch`` with ``bin/<name>`` printing ``<name> <version>``."""
    entry = store / name / version / arch
    (entry / "bin").mkdir(parents=True)
    tool = entry / "bin" / name
    tool.write_text(f"#!/bin/sh\necho {name} {version}\n")
    tool.chmod(0o755)
    return entry
