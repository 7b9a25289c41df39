"""The hook runs on the runner's Python: vermin's 3.8 floor, and the zipapp itself run
by the system's python3 and by a real 3.8 (a 3.7 gets one line)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent.hook import build
from tests.hook import pythons

ROOT = Path(__file__).resolve().parents[2]


def test_vermin_says_hook_and_platform_run_on_python_3_8() -> None:
    vermin = Path(sys.executable).parent / "vermin"
    if not vermin.exists():
        pytest.skip("vermin is not in the venv (pip install -e '.[dev]')")
    proc = subprocess.run(
        [str(vermin), "-t=3.8-", "--no-tips", "--violations", "agent/hook", "agent/platform"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build.build_zipapp(tmp_path_factory.mktemp("pyz"))


def test_the_zipapp_holds_the_hook_and_platform_sources_only(pyz: Path) -> None:
    assert pyz.name == "runner-agent-hook.pyz"
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(pyz) as archive:
        names = archive.namelist()
        init = archive.read("agent/__init__.py")
    assert names == sorted(names)
    assert "__main__.py" in names
    assert "agent/hook/main.py" in names
    assert "agent/platform/detect.py" in names
    assert all(n.endswith(".py") for n in names)
    assert {n.split("/")[1] for n in names if n.startswith("agent/") and n.count("/") > 1} == {
        "hook",
        "platform",
    }
    assert b"import" not in init


def test_the_build_is_reproducible(pyz: Path, tmp_path: Path) -> None:
    again = build.build_zipapp(tmp_path / "again.pyz")
    assert again.read_bytes() == pyz.read_bytes()


@pytest.mark.parametrize("which", ["system", "3.8"])
def test_the_zipapp_runs_isolated(pyz: Path, which: str, tmp_path: Path) -> None:
    python = pythons.SYSTEM if which == "system" else pythons.pyenv("3.8")
    if python is None or not python.exists():
        pytest.skip(f"no python {which} here")
    proc = subprocess.run(
        [str(python), "-I", str(pyz), "--help"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "started" in proc.stdout
    assert "ensure" in proc.stdout
    # A command that reaches real code (context, platform detection, the client): an
    # unreachable agent under policy fail exits 3 with one error line.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RUNNER_NAME": "r1",
        "GITHUB_RUN_ID": "1",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_JOB": "build",
        "GITHUB_EVENT_NAME": "push",
        "RUNNER_AGENT_SOCKET": str(tmp_path / "no.sock"),
        "RUNNER_AGENT_HOOK_WAIT": "0",
    }
    proc = subprocess.run(
        [str(python), "-I", str(pyz), "started"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("runner-agent: error:") == 1
    assert "did not answer within 0 s" in proc.stderr


def test_an_older_python_gets_one_line(pyz: Path, tmp_path: Path) -> None:
    python = pythons.pyenv("3.7")
    if python is None:
        pytest.skip("no python 3.7 here")
    proc = subprocess.run(
        [str(python), "-I", str(pyz), "started"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "runner-agent: the job hook needs Python 3.8 or newer; this python3 is 3.7: "
        "install a newer python3 in the runner image"
    ]


def _code_file(python: Path, pyz: Path) -> str:
    # A module compiled from the zipapp's source names its full path inside the zipapp;
    # one loaded from precompiled bytecode names the path precompile gave it.
    proc = subprocess.run(
        [str(python), "-I", "-c",
         f"import sys; sys.path.insert(0, {str(pyz)!r}); from agent.hook import main; "
         "print(main.main.__code__.co_filename)"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return proc.stdout.strip()


def test_precompile_adds_bytecode_the_runners_python_loads(pyz: Path, tmp_path: Path) -> None:
    compiled = build.build_zipapp(tmp_path / "compiled.pyz", python=str(pythons.SYSTEM))
    with zipfile.ZipFile(compiled) as archive:
        names = set(archive.namelist())
    sources = {n for n in names if n.endswith(".py")}
    assert {n + "c" for n in sources} == names - sources
    assert compiled.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert _code_file(pythons.SYSTEM, compiled) == "agent/hook/main.py"
    assert _code_file(pythons.SYSTEM, pyz).endswith("pyz/agent/hook/main.py")
    again = build.build_zipapp(tmp_path / "again.pyz", python=str(pythons.SYSTEM))
    assert again.read_bytes() == compiled.read_bytes()
    # In place, from the zipapp itself, as a runner image's build runs it.
    copy = tmp_path / "copy.pyz"
    copy.write_bytes(pyz.read_bytes())
    subprocess.run(
        [str(pythons.SYSTEM), "-I", str(copy), "precompile"], check=True, timeout=60,
        capture_output=True,
    )  # fmt: skip
    assert copy.read_bytes() == compiled.read_bytes()


def test_a_precompiled_zipapp_still_runs_on_another_python(tmp_path: Path) -> None:
    other = pythons.pyenv("3.8")
    if other is None:
        pytest.skip("needs pyenv's Python 3.8 (the hook's floor)")
    compiled = build.build_zipapp(tmp_path / "compiled.pyz", python=str(pythons.SYSTEM))
    # Another interpreter does not know the bytecode's magic number: it reads the source.
    assert _code_file(other, compiled).endswith("pyz/agent/hook/main.py")
    proc = subprocess.run(
        [str(other), "-I", str(compiled), "--help"], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "started" in proc.stdout


def test_precompile_refuses_what_is_not_the_zipapp(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.hook", "precompile"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "precompile works on the zipapp" in proc.stderr
