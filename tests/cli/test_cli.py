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
        "runner",
        "upstream",
        "github",
        "gpu",
        "kubernetes",
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


def test_every_client_command_finds_its_token_and_a_refusal_exits_4(
    start_agent: Starter,
) -> None:
    # With the token files in the config, status and services authenticated differently
    # from ensure (401): every command now reads the same settings.
    job, admin, wrong = (start_agent.workdir / f"{n}.token" for n in ("job", "admin", "wrong"))
    job.write_text("job-secret")
    admin.write_text("admin-secret")
    wrong.write_text("wrong")
    config = start_agent.base_config(job_token_file=str(job), admin_token_file=str(admin))
    agent = start_agent.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, what="ready")
    path = agent.config
    assert path is not None
    commands = {
        "status": ["status"],
        "services ls": ["services", "ls"],
        "services logs": ["services", "logs", "nothing"],
        "services restart": ["services", "restart", "nothing"],
        "ensure": ["ensure", "feature:nothing-at-all"],
    }
    for name, argv in commands.items():
        found = cli(*argv, "--config", str(path))
        # Authenticated: ready, or the agent's own answer about the request.
        assert found.returncode in (0, 1), (name, found.stderr)
        assert "refused" not in found.stderr, (name, found.stderr)
        assert "(401)" not in found.stderr, (name, found.stderr)
        assert "(403)" not in found.stderr, (name, found.stderr)
        refused = cli(*argv, "--config", str(path), "--token-file", str(wrong))
        assert refused.returncode == 4, (name, refused.stderr)
        assert "the agent refused the request (401)" in refused.stderr, name
        assert "--token-file" in refused.stderr, name
    # The job token on an admin command: 403, naming the admin setting.
    scoped = cli("services", "restart", "nothing", "--config", str(path), "--token-file", str(job))
    assert scoped.returncode == 4
    assert "(403)" in scoped.stderr
    assert "server.admin_token_file" in scoped.stderr
    assert "job-secret" not in scoped.stderr + scoped.stdout


def test_a_bad_on_config_error_value_is_a_usage_error() -> None:
    proc = cli("serve", env={"RUNNER_AGENT_ON_CONFIG_ERROR": "ignore"})
    assert proc.returncode == 2
    assert "expected 'exit' or 'degrade'" in proc.stderr
