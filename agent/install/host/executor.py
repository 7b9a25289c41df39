"""Executing a ``system`` plan step on the host that runs the job (host mode).

The plan's actions run in order through :mod:`agent.kits.procs`, the same step executor
the store's installs use (and the sidecar path hands its steps to the runner's):

- the feature's check runs first: a host that already has the tool installs nothing;
- ``write_file`` and ``download`` add a repository (a deb822 sources file, a signing key,
  a .repo file) only under the package managers' own configuration folders, written
  atomically; a changed repository forces an index refresh;
- ``run`` with purpose ``refresh`` refreshes the index at most once per interval (apt);
- ``run`` with purpose ``install`` keeps the manager's downloads in the shared package
  cache and holds the cache's cross-host lock (apt's own archive lock is per host);
- output streams to ``on_line`` as it comes; every wait for a lock says who holds it.

Policy: a failure raises :class:`SystemInstallError`, which names the feature, the
package manager and, where the manager said so, the package (missing, held, unmet
dependencies) and the repositories the refresh could not fetch.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from agent.install.host import apt
from agent.kits import procs
from agent.platform import plans as wire

ALLOWED_FOLDERS = (
    "/etc/apt/sources.list.d",
    "/etc/apt/keyrings",
    "/etc/yum.repos.d",
    "/etc/zypp/repos.d",
)
_LOCK_REPORT_EVERY = 10.0


class SystemInstallError(Exception):
    """A system package install failed; the message names what and why."""

    def __init__(self, what: str, manager: str, message: str) -> None:
        self.what = what
        self.manager = manager
        super().__init__(f"installing {what} with {manager} failed: {message}")


@dataclass(frozen=True)
class HostSettings:
    """From the ``installer`` settings."""

    package_cache: Path
    index_refresh_seconds: float = 3600.0
    lock_timeout: float = 300.0
    step_timeout: float = 900.0
    lists: Path = apt.LISTS


@dataclass
class HostResult:
    """What a system step did."""

    id: str
    version: str
    manager: str
    already_present: bool = False
    refreshed: bool = False
    seconds: float = 0.0
    check: str = ""
    lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=2000))
    """The last lines of output (bounded: a package's scripts may print without end)."""


Fetch = Callable[[str, Path], None]
Exclusive = Callable[[str], AbstractContextManager[object]]


@contextlib.contextmanager
def _no_lock(_: str) -> Iterator[None]:
    yield


def install(
    step: wire.SystemStep,
    settings: HostSettings,
    *,
    fetch: Fetch,
    exclusive: Exclusive = _no_lock,
    on_line: Callable[[str], None] | None = None,
) -> HostResult:
    """Install ``step`` (a ``system`` plan step) on this host; see the module's policy."""
    started = time.monotonic()
    what = f"{step['id']} {step['version']}"
    manager = next((a["manager"] for a in step["actions"] if "manager" in a), "unknown")
    result = HostResult(id=step["id"], version=step["version"], manager=manager)

    def emit(line: str) -> None:
        result.lines.append(line[:2000])
        if on_line is not None:
            on_line(line)

    check = step.get("check")
    if check is not None and _check(check, settings) is None:
        result.already_present = True
        result.check = "ok: already present on this host"
        result.seconds = time.monotonic() - started
        return result
    changed = False
    fetch_failures: list[str] = []
    for action in step["actions"]:
        kind = action["action"]
        if kind == "write_file":
            changed |= _write(Path(action["path"]), action["content"].encode(), what, manager)
        elif kind == "download":
            changed |= _download_key(action, fetch, what, manager)
        elif kind == "run" and action.get("purpose") == "refresh":
            if manager == "apt" and not apt.needs_refresh(
                settings.index_refresh_seconds, repository_changed=changed, lists=settings.lists
            ):
                emit("runner-agent: apt's index is recent on this host; not refreshing")
                continue
            done = _run(action["argv"], action, settings, what, manager, emit)
            if not done.ok:
                raise SystemInstallError(
                    what, manager, f"the index refresh failed: {done.describe()}"
                )
            result.refreshed = True
            if manager == "apt":
                fetch_failures = apt.failed_fetches(done.output)
                if not fetch_failures:
                    apt.mark_refreshed(settings.lists)
        elif kind == "run":
            argv = _with_cache(list(action["argv"]), manager, settings.package_cache)
            with exclusive(manager):
                done = _run(argv, action, settings, what, manager, emit)
            if not done.ok:
                packages = list(action.get("packages", []))
                explained = apt.explain(done.output, packages, fetch_failures=fetch_failures)
                raise SystemInstallError(what, manager, explained or done.describe())
        else:
            raise SystemInstallError(what, manager, f"unknown action {kind!r} in the plan")
    if check is not None:
        problem = _check(check, settings)
        if problem is not None:
            raise SystemInstallError(what, manager, f"installed, but the check failed: {problem}")
        result.check = "ok"
    result.seconds = time.monotonic() - started
    return result


def _with_cache(argv: list[str], manager: str, cache: Path) -> list[str]:
    """``argv`` with the manager's downloads kept in the shared cache."""
    if manager == "apt":
        return [argv[0], *apt.cache_options(cache), *argv[1:]]
    if manager in ("dnf", "yum"):
        folder = cache / manager
        folder.mkdir(parents=True, exist_ok=True)
        return [argv[0], "--setopt=keepcache=True", f"--setopt=cachedir={folder}", *argv[1:]]
    if manager == "apk" and "--no-cache" in argv:
        folder = cache / "apk"
        folder.mkdir(parents=True, exist_ok=True)
        at = argv.index("--no-cache")
        return [*argv[:at], "--cache-dir", str(folder), "--update-cache", *argv[at + 1 :]]
    return argv


def _run(
    argv: list[str],
    action: wire.SystemAction,
    settings: HostSettings,
    what: str,
    manager: str,
    emit: Callable[[str], None],
) -> procs.Finished:
    if manager == "apt":
        _wait_for_locks(settings.lock_timeout, what, manager, emit)
    env = {**_clean_environment(), **action.get("env", {})}
    try:
        return procs.run(argv, env=env, timeout=settings.step_timeout, on_line=emit, cwd="/")
    except procs.ProcError as exc:
        raise SystemInstallError(what, manager, str(exc)) from exc


def _wait_for_locks(timeout: float, what: str, manager: str, emit: Callable[[str], None]) -> None:
    deadline = time.monotonic() + timeout
    reported = 0.0
    while True:
        held = [(path, pid) for path in apt.LOCKS if (pid := apt.holder(path)) is not None]
        if not held:
            return
        path, pid = held[0]
        now = time.monotonic()
        if now >= deadline:
            raise SystemInstallError(
                what,
                manager,
                f"{path} is still locked by pid {pid} ({_command(pid)}) after {timeout:g} s; "
                "wait for that package manager run to end, or raise "
                "installer.package_lock_timeout_seconds",
            )
        if now - reported >= _LOCK_REPORT_EVERY:
            emit(f"runner-agent: waiting for {path}, held by pid {pid} ({_command(pid)})")
            reported = now
        time.sleep(0.25)


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "unknown command"
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:80] or "unknown command"


_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _clean_environment() -> dict[str, str]:
    """What a package manager or a check gets: PATH, a locale and the proxies; never the
    agent's other variables."""
    return {
        "PATH": os.environ.get(
            "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ),
        "LANG": "C.UTF-8",
        **{
            k: v
            for k, v in os.environ.items()
            if k.lower() in ("http_proxy", "https_proxy", "no_proxy")
        },
    }


def _check(check: wire.Check, settings: HostSettings) -> str | None:
    """``None`` when the check passes, else what it printed."""
    try:
        done = procs.run(check["argv"], env=_clean_environment(), timeout=60.0, cwd="/")
    except procs.ProcError as exc:
        return str(exc)
    if done.ok and check["expect"] in done.output:
        return None
    return done.describe(200)


def _allowed(path: Path, what: str, manager: str) -> None:
    if str(path.parent) not in ALLOWED_FOLDERS or path.name in ("", ".", ".."):
        raise SystemInstallError(
            what,
            manager,
            f"the plan writes {path}, outside the package managers' folders "
            f"({', '.join(ALLOWED_FOLDERS)}); refusing",
        )


def _write(path: Path, content: bytes, what: str, manager: str) -> bool:
    """Write ``content`` atomically; whether the file changed."""
    _allowed(path, what, manager)
    with contextlib.suppress(OSError):
        if path.read_bytes() == content:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return True


def _download_key(action: wire.SystemAction, fetch: Fetch, what: str, manager: str) -> bool:
    dest = Path(action["dest"])
    _allowed(dest, what, manager)
    with tempfile.TemporaryDirectory() as folder:
        temp = Path(folder) / "key"
        try:
            fetch(action["url"], temp)
        except Exception as exc:
            raise SystemInstallError(
                what, manager, f"cannot fetch the repository key {action['url']}: {exc}"
            ) from exc
        content = temp.read_bytes()
    if b"BEGIN PGP PUBLIC KEY BLOCK" not in content and not content.startswith(b"\x99"):
        digest = hashlib.sha256(content).hexdigest()[:12]
        raise SystemInstallError(
            what,
            manager,
            f"{action['url']} is not an OpenPGP key ({len(content)} bytes, sha256 {digest}...)",
        )
    return _write(dest, content, what, manager)
