"""``runner-agent ensure`` in host mode, with a mirror pointing at the local server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.support import fixtures
from tests.support.agentproc import run_cli
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
