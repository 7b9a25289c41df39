"""The wrappers as the runner runs them (``bash -e``): no python3 is one line, and the
zipapp is found by the documented order."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.hook import build
from tests.hook import pythons

WRAPPERS = Path(__file__).resolve().parents[2] / "agent" / "hook" / "wrappers"
NAMES = ("job-started.sh", "job-completed.sh", "runner-agent-hook")


def bin_with(tmp_path: Path, python: Path | None) -> Path:
    """A PATH folder with the tools a wrapper needs, and python3 only when given."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("dirname", "env"):
        found = shutil.which(tool)
        assert found is not None
        os.symlink(found, folder / tool)
    if python is not None:
        os.symlink(python, folder / "python3")
    return folder


def run(
    wrapper: Path, path: Path, cwd: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", "-e", str(wrapper), *args],
        env={"PATH": str(path), "HOME": str(cwd), **env},
        cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_no_python3_is_one_line_and_exit_1(name: str, tmp_path: Path) -> None:
    proc = run(WRAPPERS / name, bin_with(tmp_path, None), tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        "runner-agent: python3 is needed to run the job hook; install it in the runner image\n"
    )


def test_the_wrappers_differ_only_in_their_command() -> None:
    bodies = {}
    for name in NAMES:
        lines = (WRAPPERS / name).read_text().splitlines()
        assert os.access(WRAPPERS / name, os.X_OK)
        code = [line for line in lines if not line.startswith("#")]
        bodies[name] = "\n".join(code[:-1])
        assert code[-1].startswith('exec python3 -I "$pyz" ')
    assert len(set(bodies.values())) == 1


def test_a_missing_zipapp_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "hooks"
    folder.mkdir()
    shutil.copy(WRAPPERS / "job-started.sh", folder)
    proc = run(
        folder / "job-started.sh",
        bin_with(tmp_path, pythons.SYSTEM),
        tmp_path,
        RUNNER_AGENT_HOOK_PYZ=str(tmp_path / "nope.pyz"),
    )
    assert proc.returncode == 1
    assert f"the job hook is not at {tmp_path / 'nope.pyz'}" in proc.stderr


@pytest.mark.parametrize("where", ["beside", "variable"])
def test_the_zipapp_is_found_beside_the_wrapper_or_where_the_variable_says(
    tmp_path: Path, where: str
) -> None:
    folder = tmp_path / "hooks"
    folder.mkdir()
    shutil.copy(WRAPPERS / "runner-agent-hook", folder)
    pyz = build.build_zipapp(folder if where == "beside" else tmp_path / "elsewhere.pyz")
    extra = {"RUNNER_AGENT_HOOK_PYZ": str(pyz)} if where == "variable" else {}
    proc = run(
        folder / "runner-agent-hook",
        bin_with(tmp_path, pythons.SYSTEM),
        tmp_path,
        "--help",
        **extra,
    )
    assert proc.returncode == 0, proc.stderr
    assert "runner-agent-hook" in proc.stdout
