"""The wheel carries the agent and its bundled catalog, and installs a working command."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from agent.config import paths

ROOT = Path(__file__).resolve().parent.parent


def test_a_source_checkout_finds_the_catalog() -> None:
    assert paths.bundled_catalog() == ROOT / "features"


def test_the_wheel_ships_the_catalog_and_the_console_script(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=120,
    )
    [wheel] = tmp_path.glob("runner_agent-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = zf.read(entry_points).decode()
    assert "agent/_bundled/features/README.md" in names
    assert "agent/daemon/__init__.py" in names
    assert not any(n.startswith("tests/") for n in names)
    assert "runner-agent = agent.cli:main" in scripts
