"""``runner-agent hook install | uninstall | build`` on a stand-in runner folder (real
files, the real CLI process), and ``systemd-analyze verify`` on the host-mode unit."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.agentproc import run_cli as cli

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "container" / "systemd" / "runner-agent.service"
WRAPPERS = ROOT / "agent" / "hook" / "wrappers"
OTHER = (
    "LANG=C.UTF-8\n"
    "# a comment the runner ignores\n"
    "JAVA_HOME=/usr/lib/jvm/java-17\n"
    "=starts-with-equals\n"
    "no equals sign here\n"
    "OPTS=a=b=c\n"
)


def runner_env(text: str) -> dict[str, str]:
    """What the runner's listener sets from .env (actions/runner Program.cs,
    LoadAndSetEnv: split at the first '=', a line without one sets nothing)."""
    found = {}
    for line in text.splitlines():
        index = line.find("=")
        if index > 0:
            found[line[:index]] = line[index + 1 :]
    return found


@pytest.fixture
def runner(tmp_path: Path) -> Path:
    folder = tmp_path / "actions-runner"
    folder.mkdir()
    for name in ("run.sh", "config.sh"):
        (folder / name).write_text("#!/bin/bash\n")
        (folder / name).chmod(0o755)
    (folder / ".env").write_text(OTHER)
    return folder


def install(runner: Path, hooks: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli(
        "hook",
        "install",
        "--runner-dir",
        str(runner),
        "--hook-dir",
        str(hooks),
        "--socket",
        "/run/runner-agent/api.sock",
        *extra,
    )


def test_install_places_the_hook_and_sets_the_env_keeping_every_other_line(
    runner: Path, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    proc = install(runner, hooks, "--token-file", "/etc/runner-agent/job.token")
    assert proc.returncode == 0, proc.stderr
    text = (runner / ".env").read_text()
    assert text.startswith(OTHER)  # byte for byte, in place
    env = runner_env(text)
    assert env["ACTIONS_RUNNER_HOOK_JOB_STARTED"] == str(hooks / "job-started.sh")
    assert env["ACTIONS_RUNNER_HOOK_JOB_COMPLETED"] == str(hooks / "job-completed.sh")
    assert env["RUNNER_AGENT_SOCKET"] == "/run/runner-agent/api.sock"
    assert env["RUNNER_AGENT_TOKEN_FILE"] == "/etc/runner-agent/job.token"
    assert env["OPTS"] == "a=b=c"
    for name in ("job-started.sh", "job-completed.sh", "runner-agent-hook"):
        placed = hooks / name
        assert placed.read_bytes() == (WRAPPERS / name).read_bytes()
        assert stat.S_IMODE(placed.stat().st_mode) == 0o755
    assert zipfile.is_zipfile(hooks / "runner-agent-hook.pyz")
    assert "svc.sh stop" in proc.stdout  # the runner reads .env only at its start
    # The placed wrapper finds the zipapp beside itself, as a runner would run it.
    ran = subprocess.run(
        ["bash", "-e", str(hooks / "runner-agent-hook"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"]},
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("usage: runner-agent-hook")


def test_install_is_idempotent_and_replaces_our_keys_in_place(runner: Path, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    (runner / ".env").write_text(
        "RUNNER_AGENT_SOCKET=/old.sock\n" + OTHER + "RUNNER_AGENT_SOCKET=/older.sock\n"
    )
    assert install(runner, hooks).returncode == 0
    first = (runner / ".env").read_text()
    lines = first.splitlines()
    assert lines[0] == "RUNNER_AGENT_SOCKET=/run/runner-agent/api.sock"
    assert sum(line.startswith("RUNNER_AGENT_SOCKET=") for line in lines) == 1
    assert first.startswith(lines[0] + "\n" + OTHER)
    inode = (runner / ".env").stat().st_ino
    again = install(runner, hooks)
    assert again.returncode == 0, again.stderr
    assert f"{runner / '.env'}: unchanged" in again.stdout
    assert "unchanged" in again.stdout
    assert "wrote" not in again.stdout
    assert (runner / ".env").read_text() == first
    assert (runner / ".env").stat().st_ino == inode  # not even rewritten


def test_a_file_without_a_final_newline_gets_one_before_our_lines(
    runner: Path, tmp_path: Path
) -> None:
    (runner / ".env").write_text("LANG=C.UTF-8")
    assert install(runner, tmp_path / "hooks").returncode == 0
    lines = (runner / ".env").read_text().splitlines()
    assert lines[0] == "LANG=C.UTF-8"
    assert lines[1].startswith("ACTIONS_RUNNER_HOOK_JOB_STARTED=")


def test_a_linked_env_is_neither_followed_nor_clobbered(runner: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.env"
    elsewhere.write_text("SECRET_PLACE=1\n")
    (runner / ".env").unlink()
    (runner / ".env").symlink_to(elsewhere)
    proc = install(runner, tmp_path / "hooks")
    assert proc.returncode == 1
    assert "symbolic link" in proc.stderr
    assert str(elsewhere) in proc.stderr
    assert elsewhere.read_text() == "SECRET_PLACE=1\n"
    assert (runner / ".env").is_symlink()


def test_a_link_planted_at_a_hook_file_is_replaced_not_followed(
    runner: Path, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (hooks / "job-started.sh").symlink_to(victim)
    assert install(runner, hooks).returncode == 0
    assert victim.read_text() == "keep me\n"
    assert not (hooks / "job-started.sh").is_symlink()
    assert (hooks / "job-started.sh").read_bytes() == (WRAPPERS / "job-started.sh").read_bytes()
    assert [p.name for p in hooks.iterdir() if p.name.endswith(".tmp")] == []


def test_a_linked_hook_folder_is_refused(runner: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "hooks").symlink_to(real)
    proc = install(runner, tmp_path / "hooks")
    assert proc.returncode == 1
    assert "symbolic link" in proc.stderr
    assert list(real.iterdir()) == []
    assert (runner / ".env").read_text() == OTHER


def test_a_folder_that_is_no_runner_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "not-a-runner"
    folder.mkdir()
    (folder / ".env").write_text(OTHER)
    proc = install(folder, tmp_path / "hooks")
    assert proc.returncode == 2
    assert "not a runner folder" in proc.stderr
    assert "run.sh" in proc.stderr
    assert not (tmp_path / "hooks").exists()
    assert (folder / ".env").read_text() == OTHER
    missing = install(tmp_path / "nowhere", tmp_path / "hooks")
    assert missing.returncode == 2
    assert "--runner-dir" in missing.stderr


def test_a_path_that_cannot_be_one_env_line_is_a_usage_error(runner: Path, tmp_path: Path) -> None:
    proc = install(runner, tmp_path / "ho\noks")
    assert proc.returncode == 2
    assert "one line" in proc.stderr
    assert (runner / ".env").read_text() == OTHER


def test_another_hook_is_kept_unless_forced(runner: Path, tmp_path: Path) -> None:
    theirs = "ACTIONS_RUNNER_HOOK_JOB_STARTED=/etc/arc/hooks/job-started.sh\n"
    (runner / ".env").write_text(OTHER + theirs)
    proc = install(runner, tmp_path / "hooks")
    assert proc.returncode == 1
    assert "/etc/arc/hooks/job-started.sh" in proc.stderr
    assert "--force" in proc.stderr
    assert (runner / ".env").read_text() == OTHER + theirs
    assert not (tmp_path / "hooks").exists()
    forced = install(runner, tmp_path / "hooks", "--force")
    assert forced.returncode == 0, forced.stderr
    started = runner_env((runner / ".env").read_text())["ACTIONS_RUNNER_HOOK_JOB_STARTED"]
    assert started == str(tmp_path / "hooks" / "job-started.sh")


def test_dry_run_shows_the_changes_and_writes_nothing(runner: Path, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    proc = install(runner, hooks, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"would write {hooks / 'job-started.sh'}" in proc.stdout
    assert f"+ ACTIONS_RUNNER_HOOK_JOB_STARTED={hooks / 'job-started.sh'}" in proc.stdout
    assert not hooks.exists()
    assert (runner / ".env").read_text() == OTHER


def test_uninstall_removes_our_keys_only(runner: Path, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    assert install(runner, hooks, "--token-file", "/t").returncode == 0
    dry = cli("hook", "uninstall", "--runner-dir", str(runner), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "- RUNNER_AGENT_SOCKET=/run/runner-agent/api.sock" in dry.stdout
    assert "RUNNER_AGENT_SOCKET" in (runner / ".env").read_text()
    # No --hook-dir: ours is known by the zipapp beside the wrapper.
    proc = cli("hook", "uninstall", "--runner-dir", str(runner))
    assert proc.returncode == 0, proc.stderr
    assert (runner / ".env").read_text() == OTHER
    assert (hooks / "job-started.sh").exists()  # other runners may use it
    again = cli("hook", "uninstall", "--runner-dir", str(runner))
    assert again.returncode == 0
    assert "unchanged" in again.stdout


def test_uninstall_keeps_a_hook_that_is_not_ours(runner: Path, tmp_path: Path) -> None:
    theirs = "ACTIONS_RUNNER_HOOK_JOB_STARTED=/etc/arc/hooks/job-started.sh\n"
    (runner / ".env").write_text(OTHER + theirs + "RUNNER_AGENT_SOCKET=/s\n")
    proc = cli("hook", "uninstall", "--runner-dir", str(runner))
    assert proc.returncode == 0, proc.stderr
    assert (runner / ".env").read_text() == OTHER + theirs
    assert "not runner-agent's" in proc.stdout


def test_the_config_job_token_file_is_the_default(runner: Path, tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("server:\n  job_token_file: /etc/runner-agent/job.token\n")
    proc = install(runner, tmp_path / "hooks", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    env = runner_env((runner / ".env").read_text())
    assert env["RUNNER_AGENT_TOKEN_FILE"] == "/etc/runner-agent/job.token"


@pytest.mark.root
def test_env_keeps_its_owner_and_mode_and_a_new_one_is_the_runners(
    needs_root: None, runner: Path, tmp_path: Path
) -> None:
    env = runner / ".env"
    os.chown(env, 1001, 123)
    env.chmod(0o600)
    assert install(runner, tmp_path / "hooks").returncode == 0
    info = env.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1001, 123, 0o600)
    env.unlink()
    os.chown(runner, 1001, 123)
    assert install(runner, tmp_path / "hooks").returncode == 0
    info = env.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1001, 123, 0o644)
    assert runner_env(env.read_text())["RUNNER_AGENT_SOCKET"] == "/run/runner-agent/api.sock"


def test_build_writes_the_zipapp_alone(tmp_path: Path) -> None:
    output = tmp_path / "out" / "hook.pyz"
    output.parent.mkdir()
    proc = cli("hook", "build", "--output", str(output))
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(output) as archive:
        assert "__main__.py" in archive.namelist()
    assert [p.name for p in output.parent.iterdir()] == ["hook.pyz"]


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt package systemd)")
    text = UNIT.read_text()
    # verify checks that ExecStart's binary exists: point it at this checkout's, the
    # one thing changed.
    installed = "ExecStart=/opt/runner-agent/venv/bin/runner-agent serve\n"
    assert text.count(installed) == 1
    here = ROOT / ".venv" / "bin" / "runner-agent"
    unit = tmp_path / "runner-agent.service"
    unit.write_text(text.replace(installed, f"ExecStart={here} serve\n"))
    proc = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "runner-agent.service" not in proc.stdout + proc.stderr, proc.stderr


@pytest.mark.root
def test_without_root_the_hook_goes_into_the_runner_folder(needs_root: None, workdir: Path) -> None:
    folder = workdir / "actions-runner"
    folder.mkdir()
    (folder / "run.sh").write_text("#!/bin/bash\n")
    os.chown(folder, 1001, 123)
    proc = subprocess.run(
        ["setpriv", "--reuid=1001", "--regid=123", "--clear-groups",
         sys.executable, "-m", "agent", "hook", "install", "--runner-dir", str(folder),
         "--socket", "/run/runner-agent/api.sock"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        env={"HOME": str(workdir), "PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    hooks = folder / "runner-agent-hook"
    env = runner_env((folder / ".env").read_text())
    assert env["ACTIONS_RUNNER_HOOK_JOB_STARTED"] == str(hooks / "job-started.sh")
    assert (hooks / "runner-agent-hook.pyz").stat().st_uid == 1001
    assert (folder / ".env").stat().st_uid == 1001
