"""``runner-agent ensure`` in host mode, with a mirror pointing at the local server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import fixtures
from tests.support.agentproc import PYTHON, run_cli
from tests.support.server import Server


def config(tmp_path: Path, server: Server) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cache": {"root": str(tmp_path / "store")},
                "installer": {"mirrors": {"https://nodejs.org/dist/": server.url("/dist/")}},
            }
        )
    )
    return path


def test_ensure_prints_what_to_export_and_node_runs(tmp_path: Path, http_server: Server) -> None:
    fixtures.serve_node(http_server)
    env = {"no_proxy": "127.0.0.1"}
    proc = run_cli(
        "ensure",
        "--local",
        "feature:node@20.11.1",
        "--config",
        str(config(tmp_path, http_server)),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    bin_dir = tmp_path / "store" / "node" / "20.11.1" / "x64" / "bin"
    assert proc.stdout.strip() == f'export PATH={bin_dir}:"$PATH"'
    shell = subprocess.run(
        ["sh", "-c", proc.stdout + "node --version"], capture_output=True, text=True, check=True
    )
    assert shell.stdout.strip() == "v20.11.1"
    again = run_cli(
        "ensure",
        "--local",
        "feature:node@20.11.1",
        "--format",
        "json",
        "--config",
        str(config(tmp_path, http_server)),
        env=env,
    )
    assert json.loads(again.stdout)["features"][0]["result"] == "hit"


def test_ensure_writes_github_files(tmp_path: Path, http_server: Server) -> None:
    fixtures.serve_node(http_server)
    github_path, github_env = tmp_path / "path", tmp_path / "env"
    proc = run_cli(
        "ensure",
        "--local",
        "feature:node@20.11.1",
        "--format",
        "github",
        "--config",
        str(config(tmp_path, http_server)),
        env={
            "no_proxy": "127.0.0.1",
            "GITHUB_PATH": str(github_path),
            "GITHUB_ENV": str(github_env),
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert github_path.read_text().strip().endswith("/node/20.11.1/x64/bin")


def test_ensure_failures_name_the_step(tmp_path: Path, http_server: Server) -> None:
    # No route for the tarball: the server answers 404, which is not retried.
    proc = run_cli(
        "ensure",
        "--local",
        "feature:node@20.11.1",
        "--config",
        str(config(tmp_path, http_server)),
        env={"no_proxy": "127.0.0.1"},
    )
    assert proc.returncode == 1
    assert "failed at step 'download'" in proc.stderr
    assert "404" in proc.stderr
    assert not (tmp_path / "store" / "node").exists()
    # Said once (the progress line printed it whole), naming the install log by path.
    assert proc.stderr.count("failed at step 'download'") == 1, proc.stderr
    found = re.search(r"its install log is (\S+\.log)", proc.stderr)
    assert found, proc.stderr
    assert "404" in Path(found.group(1)).read_text()


def test_a_cached_archive_shows_no_download(tmp_path: Path, http_server: Server) -> None:
    fixtures.serve_node(http_server)
    path = config(tmp_path, http_server)
    env = {"no_proxy": "127.0.0.1"}
    first = run_cli("ensure", "--local", "feature:node@20.11.1", "--config", str(path), env=env)
    assert first.returncode == 0, first.stderr
    assert "downloading" in first.stderr
    assert "0.0/0.0 MiB" not in first.stderr  # a small file reads in KiB
    # The entry goes, its archive stays in the download cache: the next ensure re-installs
    # from it, and fetching the checksum file is no download to show.
    store = tmp_path / "store"
    shutil.rmtree(store / "node")
    for leftover in (store / ".runner-agent" / "receipts").glob("node@*"):
        leftover.unlink()
    again = run_cli("ensure", "--local", "feature:node@20.11.1", "--config", str(path), env=env)
    assert again.returncode == 0, again.stderr
    assert "downloading" not in again.stderr, again.stderr


def test_github_format_without_the_runner_files_exits_2_before_installing(
    tmp_path: Path, http_server: Server
) -> None:
    fixtures.serve_node(http_server)
    proc = run_cli(
        "ensure",
        "--local",
        "feature:node@20.11.1",
        "--format",
        "github",
        "--config",
        str(config(tmp_path, http_server)),
        env={"no_proxy": "127.0.0.1", "GITHUB_PATH": "", "GITHUB_ENV": ""},
    )
    assert proc.returncode == 2, proc.stderr
    assert "$GITHUB_PATH and $GITHUB_ENV" in proc.stderr
    assert "--format env" in proc.stderr
    assert not (tmp_path / "store" / "node").exists()  # nothing was installed first


def runner_path(github_path: Path, path: str) -> str:
    """PATH as the runner builds it from GITHUB_PATH: each line is put in front."""
    for line in github_path.read_text().splitlines():
        path = f"{line}:{path}"
    return path


def test_github_path_lines_give_the_env_formats_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import ensuring

    result: Any = {"event": "result", "ok": True, "path": ["/s/a/bin", "/s/b/bin"], "env": {}}
    ensuring.emit(result, "env")
    exported = capsys.readouterr().out
    env_path = subprocess.run(
        ["sh", "-c", exported + 'printf %s "$PATH"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
    monkeypatch.setenv("GITHUB_PATH", str(tmp_path / "path"))
    monkeypatch.setenv("GITHUB_ENV", str(tmp_path / "env"))
    ensuring.emit(result, "github")
    assert runner_path(tmp_path / "path", "/usr/bin:/bin") == env_path
    assert env_path.startswith("/s/a/bin:/s/b/bin:")


@pytest.mark.parametrize(
    "command",
    [["features", "list", "--json"], ["features", "schema"], ["config", "schema"]],
)
def test_a_closed_pipe_ends_a_client_command_quietly(command: list[str]) -> None:
    # `| true` closes the pipe before the agent has started: every write meets EPIPE.
    line = " ".join([PYTHON, "-m", "agent", *command])
    proc = subprocess.run(
        ["sh", "-c", f"{line} | true; echo done"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout == "done\n"
    assert "Traceback" not in proc.stderr
    assert "BrokenPipeError" not in proc.stderr


def test_ensure_takes_a_team_file(tmp_path: Path, http_server: Server) -> None:
    fixtures.serve_node(http_server)
    team = tmp_path / "runner-config.yml"
    team.write_text("features:\n  - node@20\n")
    proc = run_cli(
        "ensure",
        "--local",
        "node@20.11.1",
        "--team",
        str(team),
        "--config",
        str(config(tmp_path, http_server)),
        env={"no_proxy": "127.0.0.1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "/node/20.11.1/x64/bin" in proc.stdout
    # The command line came after the file: its pin overrode the file's range, and says so.
    assert "note: feature:node@20 (from team) is overridden by feature:node@20.11.1" in proc.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("features:\n  - node@20\nextends: nope\n")
    refused = run_cli("ensure", "--local", "--team", str(bad))
    assert refused.returncode == 1
    assert f"{bad}:3:1: extends" in refused.stderr
    nothing = run_cli("ensure", "--local")
    assert nothing.returncode == 2
    assert "--team FILE" in nothing.stderr
