"""The hook's commands end to end against a stand-in agent (tests/hook/standin.py): the
zipapp run by the system's python3 as a separate process, its GITHUB_ENV/GITHUB_PATH
applied the way the runner applies them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.hook import build
from tests.hook import pythons, runnerfiles
from tests.hook.conftest import make_entry
from tests.hook.standin import Answer, StandIn

TOKEN = "job-token-do-not-print"
SECRET = "s3cret-of-the-job"


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build.build_zipapp(tmp_path_factory.mktemp("pyz"))


@dataclass
class Runner:
    """A stand-in runner: its folders, its environment, and the store the agent uses."""

    root: Path
    pyz: Path
    env: dict[str, str]
    store: Path

    @property
    def state(self) -> Path:
        return self.root / "state" / "job.json"

    @property
    def socket(self) -> Path:
        return Path(self.env["RUNNER_AGENT_SOCKET"])

    def hook(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(pythons.SYSTEM), "-I", str(self.pyz), *args],
            env={**self.env, **extra}, cwd=self.root / "work", capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    def applied(self) -> dict[str, str]:
        return runnerfiles.apply(
            Path(self.env["GITHUB_ENV"]), Path(self.env["GITHUB_PATH"]), {"PATH": "/usr/bin:/bin"}
        )


@pytest.fixture
def runner(tmp_path: Path, pyz: Path) -> Runner:
    for folder in ("work/repo", "state", "store", "temp"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "token").write_text(TOKEN + "\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RUNNER_NAME": "arc-runner-x7k2p",
        "GITHUB_RUN_ID": "123456",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_JOB": "build",
        "GITHUB_REPOSITORY": "octo/repo",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_ENV": str(tmp_path / "github_env"),
        "GITHUB_PATH": str(tmp_path / "github_path"),
        "GITHUB_WORKSPACE": str(tmp_path / "work" / "repo"),
        "RUNNER_WORKSPACE": str(tmp_path / "work" / "repo"),
        "RUNNER_TEMP": str(tmp_path / "temp"),
        "RUNNER_AGENT_SOCKET": str(tmp_path / "api.sock"),
        "RUNNER_AGENT_TOKEN_FILE": str(tmp_path / "token"),
        "RUNNER_AGENT_HOOK_STATE": str(tmp_path / "state" / "job.json"),
        "RUNNER_AGENT_HOOK_WAIT": "5",
        "NVIDIA_VISIBLE_DEVICES": "0,1",
    }
    Path(env["GITHUB_ENV"]).touch()
    Path(env["GITHUB_PATH"]).touch()
    make_entry(tmp_path / "store", "ninja", "1.11.1")
    return Runner(tmp_path, pyz, env, tmp_path / "store")


def job_event(runner: Runner, **extra: Any) -> dict[str, Any]:
    event = {
        "event": "job",
        "id": "j-1",
        "secret": SECRET,
        "resumed": False,
        "store": str(runner.store),
        "checks": {"ninja": {"argv": ["ninja"], "expect": "ninja 1.11.1"}},
        "homes": {"ninja": {"NINJA_USER_HOME": ["bin"]}},
    }
    event.update(extra)
    return event


def result(runner: Runner, *, ok: bool = True, failed: bool = False) -> dict[str, Any]:
    entry = str(runner.store / "ninja" / "1.11.1" / "x64")
    feature: dict[str, Any] = {
        "id": "ninja", "version": "1.11.1", "method": "pip", "result": "hit", "entry": entry,
        "path": [f"{entry}/bin"], "env": {"NINJA_ROOT": entry}, "seconds": 0.01,
    }  # fmt: skip
    if failed:
        error = "pip could not install ninja==1.11.1: no wheel for this platform"
        feature = {"id": "ninja", "version": "1.11.1", "method": "pip", "result": "failed",
                   "error": error}  # fmt: skip
    return {
        "event": "result", "ok": ok and not failed, "features": [feature],
        "path": feature.get("path", []), "env": feature.get("env", {}), "seconds": 0.02,
    }  # fmt: skip


def stream(runner: Runner, **job: Any) -> list[dict[str, Any]]:
    return [
        job_event(runner, **job),
        {"event": "plan",
         "features": [{"id": "ninja", "version": "1.11.1", "method": "pip", "round": 0}]},
        {"event": "done", "feature": "ninja", "result": "hit", "seconds": 0.01},
        result(runner),
    ]  # fmt: skip


@pytest.fixture
def agent(runner: Runner) -> Iterator[StandIn]:
    def script(path: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        if path == "/v1/jobs":
            return Answer(lines=stream(runner))
        if path == "/v1/jobs/j-1/complete":
            return Answer(body={"id": "j-1", "state": "completed", "result": body["result"],
                                "released": 1, "already": False})  # fmt: skip
        return Answer(status=404, body={"error": {"code": "not_found", "message": path}})

    with StandIn(runner.socket, script) as server:
        yield server


def test_started_sets_the_job_up_as_the_runner_applies_it(runner: Runner, agent: StandIn) -> None:
    proc = runner.hook("started")
    assert proc.returncode == 0, proc.stderr
    [(path, body, headers)] = agent.requests
    assert path == "/v1/jobs"
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in proc.stderr
    assert SECRET not in proc.stderr
    assert {k: body[k] for k in ("runner_name", "run_id", "run_attempt", "job", "repository")} == {
        "runner_name": "arc-runner-x7k2p", "run_id": "123456", "run_attempt": 1, "job": "build",
        "repository": "octo/repo",
    }  # fmt: skip
    assert body["gpus"] == {"kind": "list", "devices": ["0", "1"]}
    assert body["platform"]["os"] == "linux"
    assert 32 <= len(body["claim"]) <= 128
    assert body["supersede"] is None
    # The job's next step: ninja from the view, its variables translated, the home made.
    env = runner.applied()
    cache = runner.root / "work" / "_tool"
    view = cache / "ninja" / "1.11.1" / "x64"
    assert env["NINJA_ROOT"] == str(view)
    home = cache / ".runner-agent-homes" / "ninja" / "ninja_user_home"
    assert env["NINJA_USER_HOME"] == str(home)
    assert env["PATH"].split(":")[:4] == [
        f"{home}/bin",
        "/__t/.runner-agent-homes/ninja/ninja_user_home/bin",
        f"{view}/bin",
        "/__t/ninja/1.11.1/x64/bin",
    ]
    shell = subprocess.run(["sh", "-c", "ninja"], env=env, capture_output=True, text=True,
                           timeout=30, check=True)  # fmt: skip
    assert shell.stdout == "ninja 1.11.1\n"
    assert (cache / "ninja" / "1.11.1" / "x64.complete").is_file()
    # The state for the completed hook: 0600, with the secret.
    info = runner.state.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    saved = json.loads(runner.state.read_text())
    assert (saved["id"], saved["secret"], saved["claim"]) == ("j-1", SECRET, body["claim"])
    assert "job j-1 opened for octo/repo build" in proc.stderr
    assert "plan: ninja 1.11.1 (pip)" in proc.stderr
    table = [line for line in proc.stderr.splitlines() if "feature" in line and "version" in line]
    assert table == ["runner-agent: feature  version  result  time"]
    assert "runner-agent: ninja    1.11.1   hit     0.0 s" in proc.stderr


def test_completed_completes_the_job_with_its_secret(runner: Runner, agent: StandIn) -> None:
    assert runner.hook("started").returncode == 0
    proc = runner.hook("completed", "--result", "succeeded")
    assert proc.returncode == 0, proc.stderr
    path, body, _ = agent.requests[-1]
    assert path == "/v1/jobs/j-1/complete"
    assert body["secret"] == SECRET
    assert body["result"] == "succeeded"
    assert isinstance(body["seconds"], float)
    assert not runner.state.exists()
    assert "job j-1 completed (succeeded); released 1 lease(s)" in proc.stderr
    again = runner.hook("completed")
    assert again.returncode == 0
    assert "nothing is leased" in again.stderr


def test_a_broken_stream_is_posted_again_with_the_same_claim(runner: Runner) -> None:
    calls: list[int] = []

    def script(path: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        calls.append(1)
        lines = stream(runner, resumed=len(calls) > 1)
        return Answer(lines=lines, cut_after=2 if len(calls) == 1 else None)

    with StandIn(runner.socket, script) as agent:
        proc = runner.hook("started")
    assert proc.returncode == 0, proc.stderr
    assert agent.paths() == ["/v1/jobs", "/v1/jobs"]
    first, second = (body for _, body, _ in agent.requests)
    assert first == second
    assert "broke off the stream" in proc.stderr
    assert "job j-1 resumed" in proc.stderr


def test_an_agent_that_comes_up_late_is_waited_for(runner: Runner) -> None:
    def script(path: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        return Answer(lines=stream(runner))

    holder: list[StandIn] = []

    def start_later() -> None:
        time.sleep(1.0)
        holder.append(StandIn(runner.socket, script).__enter__())

    thread = threading.Thread(target=start_later)
    thread.start()
    try:
        proc = runner.hook("started")
    finally:
        thread.join()
        for server in holder:
            server.__exit__(None, None, None)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("policy", "code"), [("fail", 3), ("continue", 0)])
def test_an_unreachable_agent_follows_the_policy(runner: Runner, policy: str, code: int) -> None:
    proc = runner.hook(
        "started", RUNNER_AGENT_HOOK_WAIT="0.5", RUNNER_AGENT_HOOK_UNREACHABLE=policy
    )
    assert proc.returncode == code, proc.stderr
    assert "did not answer within 0 s" in proc.stderr or "did not answer within 1 s" in proc.stderr
    assert Path(runner.env["GITHUB_PATH"]).read_text() == ""


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("RUNNER_AGENT_HOOK_WAIT", "soon", "RUNNER_AGENT_HOOK_WAIT='soon' is not a number"),
        ("RUNNER_AGENT_HOOK_UNREACHABLE", "ignore", "is not fail or continue"),
        ("NVIDIA_VISIBLE_DEVICES", "gpu0", "NVIDIA_VISIBLE_DEVICES='gpu0'"),
    ],
)
def test_bad_settings_are_bad_input(runner: Runner, name: str, value: str, needle: str) -> None:
    proc = runner.hook("started", **{name: value})
    assert proc.returncode == 2
    assert needle in proc.stderr


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_a_missing_or_empty_token_file_is_named(runner: Runner, content: str | None) -> None:
    token = runner.root / "token"
    if content is None:
        token.unlink()
    else:
        token.write_text(content)
    proc = runner.hook("started")
    assert proc.returncode == 2
    assert f"the token file {token} (RUNNER_AGENT_TOKEN_FILE)" in proc.stderr
    assert ("cannot read" if content is None else "is empty") in proc.stderr


def test_the_agents_refusal_is_printed_with_what_is_available(runner: Runner) -> None:
    error = {
        "error": {
            "code": "unknown_feature",
            "message": "runner.labels: feature:nope@1: unknown feature 'nope'",
            "details": {"problems": ["runner.labels: feature:nope@1: unknown feature 'nope'"],
                        "available": ["cmake", "ninja", "node"]},
        }
    }  # fmt: skip

    def script(path: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        return Answer(status=422, body=error)

    with StandIn(runner.socket, script):
        proc = runner.hook("started")
    assert proc.returncode == 1
    assert "unknown feature 'nope' (422 unknown_feature)" in proc.stderr
    assert "available: cmake, ninja, node" in proc.stderr
    assert not runner.state.exists()


def test_a_failed_feature_completes_the_job_and_removes_the_state(runner: Runner) -> None:
    def script(path: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        if path == "/v1/jobs":
            return Answer(lines=[job_event(runner), result(runner, failed=True)])
        return Answer(body={"id": "j-1", "state": "completed", "result": body["result"],
                            "released": 0, "already": False})  # fmt: skip

    with StandIn(runner.socket, script) as agent:
        proc = runner.hook("started")
    assert proc.returncode == 1
    assert "ninja: pip could not install ninja==1.11.1: no wheel for this platform" in proc.stderr
    assert agent.paths() == ["/v1/jobs", "/v1/jobs/j-1/complete"]
    assert agent.requests[-1][1]["result"] == "failed"
    assert not runner.state.exists()
    assert Path(runner.env["GITHUB_ENV"]).read_text() == ""


def test_a_check_that_fails_in_the_runner_names_everything(runner: Runner) -> None:
    checks = {"ninja": {"argv": ["ninja"], "expect": "ninja 1.12"}}

    def script(path: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        if path == "/v1/jobs":
            return Answer(lines=[job_event(runner, checks=checks), result(runner)])
        return Answer(body={"id": "j-1", "state": "completed", "result": "failed",
                            "released": 1, "already": False})  # fmt: skip

    with StandIn(runner.socket, script) as agent:
        proc = runner.hook("started")
    assert proc.returncode == 1
    assert (
        "ninja: its check `ninja` failed in the runner (exit 0): expected 'ninja 1.12' in its "
        "output, got: ninja 1.11.1"
    ) in proc.stderr
    assert agent.paths()[-1] == "/v1/jobs/j-1/complete"


def test_a_leftover_state_is_superseded(runner: Runner, agent: StandIn) -> None:
    runner.state.write_text(json.dumps({"id": "j-0", "secret": "old", "claim": "c" * 43}))
    runner.state.chmod(0o600)
    proc = runner.hook("started")
    assert proc.returncode == 0, proc.stderr
    assert agent.requests[0][1]["supersede"] == {"id": "j-0", "secret": "old"}
    assert json.loads(runner.state.read_text())["id"] == "j-1"


def test_a_state_file_that_is_a_link_is_refused(runner: Runner, agent: StandIn) -> None:
    target = runner.root / "elsewhere.json"
    target.write_text(json.dumps({"id": "j-0", "secret": "old", "claim": "c"}))
    os.symlink(target, runner.state)
    proc = runner.hook("started")
    assert proc.returncode == 2
    assert "a link is not followed" in proc.stderr


def test_ensure_leases_to_the_job_and_sends_the_team_file(runner: Runner, agent: StandIn) -> None:
    assert runner.hook("started").returncode == 0
    team = Path(runner.env["GITHUB_WORKSPACE"]) / ".github" / "runner-config.yml"
    team.parent.mkdir()
    team.write_text("features:\n  - ninja@1\n")
    agent.script = lambda path, body, headers: Answer(lines=stream(runner))
    proc = runner.hook("ensure", "feature:ninja@1", "cmake@3")
    assert proc.returncode == 0, proc.stderr
    path, body, _ = agent.requests[-1]
    assert path == "/v1/ensure"
    assert body.pop("target_platform")["os"] == "linux"
    assert body == {
        "requests": ["ninja@1", "cmake@3"],
        "job": {"id": "j-1", "secret": SECRET},
        "team_yaml": "features:\n  - ninja@1\n",
    }
    json_team = runner.root / "team.json"
    json_team.write_text('{"features": ["ninja@1"]}')
    assert runner.hook("ensure", "ninja@1", "--team", str(json_team)).returncode == 0
    assert agent.requests[-1][1]["team"] == {"features": ["ninja@1"]}


def test_a_thousand_labels_are_refused_before_asking(runner: Runner, agent: StandIn) -> None:
    proc = runner.hook("ensure", *[f"feature:f{i}@1" for i in range(1000)])
    assert proc.returncode == 2
    assert "1000 labels given; one ensure takes at most 32" in proc.stderr
    assert agent.requests == []


ACTION = Path(__file__).resolve().parents[2] / ".github" / "actions" / "ensure"


@pytest.mark.parametrize("how", ["installed hook", "action source"])
def test_the_ensure_action_runs_the_hook(
    runner: Runner, agent: StandIn, tmp_path: Path, how: str
) -> None:
    import yaml

    agent.script = lambda path, body, headers: Answer(lines=stream(runner))
    spec = yaml.safe_load((ACTION / "action.yml").read_text())
    assert set(spec["inputs"]) == {"features", "team", "lock"}
    [step] = spec["runs"]["steps"]
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    extra = {"GITHUB_ACTION_PATH": str(ACTION), "RUNNER_AGENT_TEAM": "", "RUNNER_AGENT_LOCK": "",
             "RUNNER_AGENT_FEATURES": "feature:ninja@1\n  cmake@3\n"}  # fmt: skip
    if how == "installed hook":
        folder = tmp_path / "hook"
        folder.mkdir()
        build.build_zipapp(folder)
        wrapper = Path(__file__).resolve().parents[2] / "agent/hook/wrappers/runner-agent-hook"
        (folder / "runner-agent-hook").write_bytes(wrapper.read_bytes())
        (folder / "runner-agent-hook").chmod(0o755)
        extra["RUNNER_AGENT_HOOK"] = str(folder / "runner-agent-hook")
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        env={**runner.env, **extra}, cwd=runner.root / "work", capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    path, body, _ = agent.requests[-1]
    assert path == "/v1/ensure"
    assert body["requests"] == ["ninja@1", "cmake@3"]
    assert "ninja/1.11.1/x64/bin" in Path(runner.env["GITHUB_PATH"]).read_text()


def test_ensure_without_labels_or_team_is_bad_input(runner: Runner, agent: StandIn) -> None:
    proc = runner.hook("ensure")
    assert proc.returncode == 2
    assert "nothing to ensure" in proc.stderr
