"""``runner-agent-hook ensure`` and the lock file: ``--lock FILE``, else the workspace's
``.github/runner-agent.lock``, goes to the agent as the ensure body's ``lock`` (which the
agent then resolves with, pinning versions), and a lock the hook cannot send is bad
input (exit 2) naming the file, a FIFO included, without hanging. Against the stand-in
agent of test_flow.py (its runner and fixtures), the zipapp run by the system's python3."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.catalog import loading, lockfile, requests, resolver
from agent.config import paths
from agent.sources import resolution
from tests.hook import pythons, test_flow
from tests.hook.standin import Answer, StandIn
from tests.support import fixtures

# test_flow.py's fixtures, under their own names: a runner's folders and environment, the
# zipapp, and a stand-in agent that opens job j-1 and answers an ensure with ninja.
pyz = test_flow.pyz
runner = test_flow.runner
agent = test_flow.agent
Runner = test_flow.Runner

NINJA = "1.11.1.4"
"""A version of ninja the bundled catalog lists, not its highest: a lock's to pin."""


def lock_document() -> dict[str, Any]:
    """A lock as runner-agent features lock writes it: ninja pinned (a pip feature, so by
    version alone)."""
    made = lockfile.Lock()
    made.put("ninja", NINJA, "linux/x64/glibc", lockfile.Entry(method="pip"))
    data: dict[str, Any] = json.loads(made.dump())
    return data


def hook(runner: Runner, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """``runner.hook``, with a wait short enough to fail a hang inside the test's time."""
    return subprocess.run(
        [str(pythons.SYSTEM), "-I", str(runner.pyz), *args],
        env=runner.env, cwd=runner.root / "work", capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def ensured(runner: Runner, agent: StandIn, *args: str) -> dict[str, Any]:
    """The body of the ensure that ``args`` posted (after ``started``), asserting it ran."""
    assert hook(runner, "started").returncode == 0
    agent.script = lambda path, body, headers: Answer(lines=test_flow.stream(runner))
    proc = hook(runner, "ensure", "feature:ninja@1", *args)
    assert proc.returncode == 0, proc.stderr
    path, body, _ = agent.requests[-1]
    assert path == "/v1/ensure"
    return body


def workspace_lock(runner: Runner) -> Path:
    folder = Path(runner.env["GITHUB_WORKSPACE"]) / ".github"
    folder.mkdir(exist_ok=True)
    return folder / "runner-agent.lock"


def test_ensure_lock_sends_the_lock_and_the_agent_pins_its_version(
    runner: Runner, agent: StandIn
) -> None:
    given = runner.root / "mine.lock"
    given.write_text(json.dumps(lock_document(), indent=2))

    body = ensured(runner, agent, "--lock", str(given))

    assert body["lock"] == lock_document()
    assert body["requests"] == ["ninja@1"]
    assert body["job"] == {"id": "j-1", "secret": test_flow.SECRET}
    # What the agent does with that body: its lock pins ninja@1 to the locked version,
    # not to the catalog's highest 1.x.
    pinned = resolution.lock_from(body["lock"], "lock")
    assert pinned is not None
    catalog = loading.load([paths.bundled_catalog()])
    wanted = [requests.parse(r) for r in body["requests"]]
    plan = resolver.resolve(wanted, catalog, fixtures.LINUX, store_root="/store", lock=pinned)
    assert [(s["id"], s["version"]) for s in plan.to_data()["features"]] == [("ninja", NINJA)]
    free = resolver.resolve(wanted, catalog, fixtures.LINUX, store_root="/store")
    assert free.to_data()["features"][0]["version"] != NINJA


def test_the_workspaces_lock_is_sent_without_lock(runner: Runner, agent: StandIn) -> None:
    workspace_lock(runner).write_text(lockfile.Lock().dump())

    body = ensured(runner, agent)

    assert body["lock"] == {"features": {}, "lockVersion": 1}


def test_lock_is_preferred_to_the_workspaces(runner: Runner, agent: StandIn) -> None:
    workspace_lock(runner).write_text(lockfile.Lock().dump())
    given = runner.root / "mine.lock"
    given.write_text(json.dumps(lock_document()))

    body = ensured(runner, agent, "--lock", str(given))

    assert body["lock"] == lock_document()


def test_without_a_lock_file_the_body_has_no_lock(runner: Runner, agent: StandIn) -> None:
    body = ensured(runner, agent)

    assert "lock" not in body


def test_a_fifo_for_the_workspaces_lock_is_refused_and_does_not_hang(
    runner: Runner, agent: StandIn
) -> None:
    # Not skipped: the job must not run unlocked because something odd sits there.
    fifo = workspace_lock(runner)
    os.mkfifo(fifo)

    proc = hook(runner, "ensure", "feature:ninja@1", timeout=15)

    assert proc.returncode == 2, proc.stderr
    assert f"the lock file {fifo} is not a regular file" in proc.stderr
    assert agent.requests == []


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"lockVersion = 1\n", "is not JSON"),
        (b'{"features": {}, "lockVersion": 1', "is not JSON"),
        (b"\xff\xfe{}", "is not JSON"),
        (b"[]", "holds a JSON list"),
        (b'"features"', "holds a JSON str"),
        (b"[" * 100_000, "is not JSON"),
        (b'{"lockVersion": 1, "pad": "' + b"x" * (256 << 10) + b'"}', "is over 256 KiB"),
    ],
    ids=["text", "cut short", "not utf-8", "list", "string", "nested", "over 256 KiB"],
)
def test_a_lock_the_hook_cannot_send_is_bad_input_naming_the_file(
    runner: Runner, agent: StandIn, content: bytes, needle: str
) -> None:
    given = runner.root / "bad.lock"
    given.write_bytes(content)

    proc = hook(runner, "ensure", "feature:ninja@1", "--lock", str(given))

    assert proc.returncode == 2, proc.stderr
    assert f"the lock file {given}" in proc.stderr
    assert needle in proc.stderr
    assert agent.requests == []


def test_the_workspaces_bad_lock_is_bad_input_naming_it(runner: Runner, agent: StandIn) -> None:
    found = workspace_lock(runner)
    found.write_text("[1, 2]")

    proc = hook(runner, "ensure", "feature:ninja@1")

    assert proc.returncode == 2, proc.stderr
    assert f"the lock file {found} holds a JSON list" in proc.stderr
    assert agent.requests == []


def test_exactly_the_limit_is_within_it(runner: Runner, agent: StandIn) -> None:
    head = b'{"features": {}, "lockVersion": 1, "pad": "'
    given = runner.root / "big.lock"
    given.write_bytes(head + b"x" * ((256 << 10) - len(head) - 2) + b'"}')
    assert given.stat().st_size == 256 << 10

    body = ensured(runner, agent, "--lock", str(given))

    assert body["lock"]["lockVersion"] == 1  # the agent names the unknown key, not the hook


def test_a_fifo_given_by_lock_is_refused_without_hanging(runner: Runner, agent: StandIn) -> None:
    fifo = runner.root / "fifo.lock"
    os.mkfifo(fifo)

    proc = hook(runner, "ensure", "feature:ninja@1", "--lock", str(fifo), timeout=15)

    assert proc.returncode == 2, proc.stderr
    assert f"the lock file {fifo} is not a regular file" in proc.stderr
    assert agent.requests == []


def test_a_folder_given_by_lock_is_refused(runner: Runner, agent: StandIn) -> None:
    proc = hook(runner, "ensure", "feature:ninja@1", "--lock", str(runner.root))

    assert proc.returncode == 2, proc.stderr
    assert f"the lock file {runner.root}" in proc.stderr
    assert "Is a directory" in proc.stderr or "is not a regular file" in proc.stderr
    assert agent.requests == []


def test_a_missing_file_given_by_lock_is_named(runner: Runner, agent: StandIn) -> None:
    missing = runner.root / "nowhere" / "runner-agent.lock"

    proc = hook(runner, "ensure", "feature:ninja@1", "--lock", str(missing))

    assert proc.returncode == 2, proc.stderr
    assert f"cannot read the lock file {missing}: No such file or directory" in proc.stderr
    assert agent.requests == []


def test_a_fifo_given_as_the_team_file_is_refused_without_hanging(
    runner: Runner, agent: StandIn
) -> None:
    # The team file is read the same way as the lock (it blocked on a FIFO before).
    fifo = runner.root / "fifo.yml"
    os.mkfifo(fifo)

    proc = hook(runner, "ensure", "feature:ninja@1", "--team", str(fifo), timeout=15)

    assert proc.returncode == 2, proc.stderr
    assert f"the team file {fifo} is not a regular file" in proc.stderr
    assert agent.requests == []
