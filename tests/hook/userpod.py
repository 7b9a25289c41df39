"""A runner pod whose user is unprivileged (uid 1001, gid 123, no other groups), for the
permission tests: root ignores file modes, so everything the runner does here runs
through ``setpriv``.

The layout is ARC's: the work folder ``_work`` with the tool cache ``_work/_tool``, the
agent's store bind-mounted READ-ONLY at ``_work/_tool/.runner-agent-store`` (the mount
is root's; the pod's folders are the runner user's). The hooks are the real wrappers
and zipapp, run as the runner runs them (``bash -e``); a later step of the job applies
GITHUB_ENV and GITHUB_PATH as the runner does (:mod:`tests.hook.runnerfiles`).
:data:`ATTACK` is job code that turns against another runner's job.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.hook import build
from tests.hook import runnerfiles

UID, GID = 1001, 123
WRAPPERS = Path(__file__).resolve().parents[2] / "agent" / "hook" / "wrappers"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def as_user(argv: list[str], uid: int = UID) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={GID}", "--clear-groups", *argv]


def chown_tree(path: Path, uid: int = UID) -> None:
    for folder, dirs, files in os.walk(path):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.lchown(name, uid, GID)


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every name below ``root`` with its mode, size, mtime and link target, except the
    agent's own ``.runner-agent`` folder (leases come and go there)."""
    seen: dict[str, tuple[int, int, int, str]] = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if d != ".runner-agent"]
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            info = os.lstat(name)
            target = os.readlink(name) if stat.S_ISLNK(info.st_mode) else ""
            seen[name] = (info.st_mode, info.st_size, info.st_mtime_ns, target)
    return seen


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.socket_path)


def api(
    sock: Path, method: str, target: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """One request to the agent as root (the tests' own look, not the job's)."""
    conn = UnixHTTP(sock)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, target, None if body is None else json.dumps(body), headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    first = raw.split(b"\n", 1)[0]
    return response.status, json.loads(first) if first.strip() else None


class Pod:
    """One runner pod; its runner is ``runner_name`` and its user ``uid``."""

    def __init__(
        self, root: Path, sock: Path, runner_name: str, *, uid: int = UID, **extra: str
    ) -> None:
        self.root, self.uid = root, uid
        self.hooks = root / "hooks"
        self.hooks.mkdir(parents=True)
        for name in ("job-started.sh", "job-completed.sh", "runner-agent-hook"):
            shutil.copy(WRAPPERS / name, self.hooks / name)
        build.build_zipapp(self.hooks)
        self.home = root / "home"
        self.work = root / "_work"
        self.tool_cache = self.work / "_tool"
        self.temp = self.work / "_temp"
        self.commands = self.temp / "_runner_file_commands"
        for folder in (self.home, self.work / "repo" / "repo", self.tool_cache, self.commands):
            folder.mkdir(parents=True, exist_ok=True)
        self.state = self.home / ".local" / "state" / "runner-agent" / f"job-{runner_name}.json"
        self.env = {
            "PATH": BASE_PATH,
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "RUNNER_NAME": runner_name,
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_TEMP": str(self.temp),
            "RUNNER_WORKSPACE": str(self.work / "repo"),
            "GITHUB_WORKSPACE": str(self.work / "repo" / "repo"),
            "GITHUB_REPOSITORY": "octo/repo",
            "GITHUB_RUN_ID": "5151",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_JOB": "build",
            "GITHUB_WORKFLOW": "CI",
            "GITHUB_EVENT_NAME": "push",
            "GITHUB_EVENT_PATH": str(self.temp / "event.json"),
            "GITHUB_ENV": str(self.commands / "set_env_1"),
            "GITHUB_PATH": str(self.commands / "add_path_1"),
            "RUNNER_AGENT_SOCKET": str(sock),
            "RUNNER_AGENT_HOOK_WAIT": "30",
            **extra,
        }
        (self.temp / "event.json").write_text('{"ref": "refs/heads/main"}')
        for name in ("GITHUB_ENV", "GITHUB_PATH"):
            Path(self.env[name]).write_text("")
        root.chmod(0o755)
        chown_tree(root, uid)

    @property
    def store_view(self) -> Path:
        return self.tool_cache / ".runner-agent-store"

    @contextlib.contextmanager
    def store_mounted(self, store: Path) -> Iterator[None]:
        """The store read-only inside the tool cache, as the pod's volume mount."""
        self.store_view.mkdir()
        subprocess.run(["mount", "--bind", str(store), str(self.store_view)], check=True)
        try:
            subprocess.run(
                ["mount", "-o", "remount,bind,ro", str(self.store_view)], check=True, timeout=30
            )
            yield
        finally:
            subprocess.run(["umount", str(self.store_view)], check=True, timeout=30)

    def run(self, argv: list[str], env: dict[str, str], timeout: float = 240) -> Any:
        proc = subprocess.run(
            as_user(argv, self.uid), env=env, cwd=self.env["GITHUB_WORKSPACE"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        print(proc.stdout + proc.stderr)
        return proc

    def hook(self, wrapper: str, *args: str) -> subprocess.CompletedProcess[str]:
        """A hook wrapper as the runner runs it: ``bash -e``, the runner's variables."""
        result: subprocess.CompletedProcess[str] = self.run(
            ["bash", "-e", str(self.hooks / wrapper), *args], dict(self.env)
        )
        return result

    def step_env(self) -> dict[str, str]:
        """The environment of the job's next step: the runner's files applied."""
        return runnerfiles.apply(
            Path(self.env["GITHUB_ENV"]), Path(self.env["GITHUB_PATH"]), dict(self.env)
        )

    def step(self, script: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """A later step of the job, a ``bash -e`` script as the runner's user."""
        result: subprocess.CompletedProcess[str] = self.run(
            ["bash", "-e", "-c", script], {**self.step_env(), **extra}
        )
        return result


# Job code of runner A: it holds its own state (id, secret) and the job token, learns
# the other job's id from GET /v1/jobs/current, and tries what it should not: read the
# other's state, complete the other job (its own secret, the token alone, no token),
# ensure in its name, open a job as its runner, with or without superseding it.
ATTACK = r"""
import http.client, json, socket, sys
state_path, other_state, sock, token_file = sys.argv[1:5]
own = json.load(open(state_path))
token = open(token_file).read().strip()

class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sock)

def call(method, target, body=None, bearer=token):
    conn = Unix("localhost", timeout=30)
    headers = {"Content-Type": "application/json"}
    if bearer:
        headers["Authorization"] = "Bearer " + bearer
    conn.request(method, target, None if body is None else json.dumps(body), headers)
    response = conn.getresponse()
    first = response.read().split(b"\n", 1)[0]
    conn.close()
    return [response.status, json.loads(first) if first.strip() else None]

out = {}
try:
    open(other_state).read()
    out["read_other_state"] = "read"
except OSError as exc:
    out["read_other_state"] = exc.strerror
jobs = call("GET", "/v1/jobs/current")[1]["jobs"]
[other] = [j["id"] for j in jobs if j["runner_name"] == sys.argv[5]]
out["other"] = other
done = "/v1/jobs/" + other + "/complete"
out["own_secret"] = call("POST", done, {"secret": own["secret"], "result": "failed"})
out["token_only"] = call("POST", done, {"result": "failed"})
out["no_token"] = call("POST", done, {"secret": own["secret"]}, bearer=None)
out["ensure"] = call(
    "POST", "/v1/ensure",
    {"requests": ["node"], "job": {"id": other, "secret": own["secret"]}},
)
start = {"runner_name": sys.argv[5], "run_id": "1", "job": "build", "claim": "c" * 40}
out["as_that_runner"] = call("POST", "/v1/jobs", start)
out["supersede"] = call(
    "POST", "/v1/jobs", dict(start, supersede={"id": other, "secret": own["secret"]})
)
print(json.dumps(out))
"""
