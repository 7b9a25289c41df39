"""The runner-agent command line, run as a real process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.agentproc import Starter
from tests.support.agentproc import run_cli as cli


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["serve"],
        ["status"],
        ["config"],
        ["config", "validate"],
        ["config", "schema"],
        ["config", "show"],
        ["version"],
    ],
)
def test_every_command_has_help(args: list[str]) -> None:
    proc = cli(*args, "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: runner-agent")


def test_version() -> None:
    from agent import __version__

    assert cli("version").stdout.strip() == f"runner-agent {__version__}"


def test_validate_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("server:\n  metrics_address: 0.0.0.0:9102\n")
    proc = cli("config", "validate", str(path))
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"{path}: valid"


def test_validate_a_bad_file_prints_one_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("server:\n  metrics_address: nowhere\n  shutdown_grace_seconds: -1\n")
    proc = cli("config", "validate", str(path))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(
        f"{path}:2:3: server.metrics_address: got 'nowhere'; expected host:port"
    )
    assert lines[1].startswith(f"{path}:3:3: server.shutdown_grace_seconds: got -1;")


def test_validate_applies_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("{}\n")
    proc = cli("config", "validate", str(path), env={"RUNNER_AGENT_LOGGING__LEVEL": "loud"})
    assert proc.returncode == 1
    assert "environment variable RUNNER_AGENT_LOGGING__LEVEL" in proc.stderr


def test_schema_describes_every_group_and_forbids_unknown_keys() -> None:
    proc = cli("config", "schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert set(schema["properties"]) == {
        "server",
        "cache",
        "catalog",
        "features",
        "installer",
        "logging",
        "services",
    }
    assert schema["additionalProperties"] is False
    server = schema["$defs"]["ServerSettings"]["properties"]
    assert server["metrics_address"]["default"] == "127.0.0.1:9102"
    assert server["metrics_address"]["x-restart-required"] is True
    assert "pods set 0.0.0.0:9102" in server["metrics_address"]["description"]


def test_show_prints_the_effective_config_without_secrets(tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("do-not-print-me")
    path = tmp_path / "a.yaml"
    path.write_text(f"server:\n  admin_token_file: {token}\n")
    proc = cli(
        "config", "show", "--config", str(path), env={"RUNNER_AGENT_LOGGING__FORMAT": "text"}
    )
    assert proc.returncode == 0, proc.stderr
    shown = yaml.safe_load(proc.stdout)
    assert shown["server"]["admin_token_file"] == str(token)
    assert shown["logging"]["format"] == "text"
    assert "do-not-print-me" not in proc.stdout


def test_show_reads_runner_agent_config(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("logging:\n  level: error\n")
    proc = cli("config", "show", env={"RUNNER_AGENT_CONFIG": str(path)})
    assert yaml.safe_load(proc.stdout)["logging"]["level"] == "error"


def test_status_of_a_missing_agent_exits_3(tmp_path: Path) -> None:
    proc = cli("status", "--socket", str(tmp_path / "none.sock"))
    assert proc.returncode == 3
    assert "cannot reach the agent" in proc.stderr


def test_status_of_a_running_agent(start_agent: Starter) -> None:
    agent = start_agent.start(start_agent.base_config())
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    proc = cli("status", env={"RUNNER_AGENT_SOCKET": str(agent.socket)})
    assert proc.returncode == 0, proc.stderr
    assert "[ok] config: generation 1" in proc.stdout
    assert proc.stdout.strip().endswith("ready")
    raw = cli("status", "--json", "--socket", str(agent.socket))
    assert json.loads(raw.stdout)["pid"] == agent.proc.pid


def test_status_with_a_wrong_token_exits_1(start_agent: Starter) -> None:
    (start_agent.workdir / "job.token").write_text("right")
    (start_agent.workdir / "wrong.token").write_text("wrong")
    agent = start_agent.start(
        start_agent.base_config(job_token_file=str(start_agent.workdir / "job.token"))
    )
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    proc = cli(
        "status",
        "--socket",
        str(agent.socket),
        "--token-file",
        str(start_agent.workdir / "wrong.token"),
    )
    assert proc.returncode == 1
    assert "401" in proc.stderr
    good = cli(
        "status",
        "--socket",
        str(agent.socket),
        "--token-file",
        str(start_agent.workdir / "job.token"),
    )
    assert good.returncode == 0


def test_a_bad_on_config_error_value_is_a_usage_error() -> None:
    proc = cli("serve", env={"RUNNER_AGENT_ON_CONFIG_ERROR": "ignore"})
    assert proc.returncode == 2
    assert "expected 'exit' or 'degrade'" in proc.stderr
