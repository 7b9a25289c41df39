"""Executing a ``system`` plan step on the host that runs the job (host mode).

The plan's actions run in order through :mod:`agent.kits.procs`, the same step executor
the store's installs use (and the sidecar path hands its steps to the runner's). What
differs between package managers comes from the manager's own module, through
:func:`agent.platform.packagers.get`; nothing here names a manager:

- the feature's check runs first: a host that already has the tool installs nothing. A
  feature without a check asks the manager's installed-package query instead;
- ``write_file`` and ``download`` add a repository (a deb822 sources file, a signing key,
  a .repo file) only under the manager's own repository folders, written atomically; a
  changed repository forces an index refresh;
- ``run`` with purpose ``refresh`` refreshes the index at most once per interval where
  the manager keeps its index in a known folder (a stamp beside the index records the
  last complete refresh, so wiping the index wipes the stamp too);
- ``run`` with purpose ``install`` keeps the manager's downloads in the shared package
  cache and holds the cache's cross-host lock (the manager's own locks are per host);
- every command gets the one clean environment's host profile
  (:func:`agent.kits.environ.clean` with ``host``: no pip/npm settings, home or scratch
  folder) and a fixed locale, since the manager's messages are read; output streams to
  ``on_line`` as it comes; every wait for a lock the manager takes says who holds it.

Policy: a failure raises :class:`SystemInstallError`, which names the feature, the
package manager and, where the manager's module recognises its output, the package
(missing, held, locked) and the repositories the refresh could not fetch.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from agent.kits import environ, procs
from agent.platform import model, packagers
from agent.platform import plans as wire

STAMP_NAME = ".runner-agent-refreshed"
_LOCK_REPORT_EVERY = 10.0
_QUERY_TIMEOUT = 60.0
_FLOCK = "hhxxxxqqixxxx"  # struct flock on 64-bit Linux: type, whence, start, len, pid


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
    index_folder: Path | None = None
    """Where the manager's index lives; None: where the manager's module says."""


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


@dataclass(frozen=True)
class _Job:
    """One step's install: what it is, with which manager, and where output goes."""

    what: str
    packager: packagers.Packager
    settings: HostSettings
    emit: Callable[[str], None]

    @property
    def manager(self) -> str:
        return self.packager.name

    def fail(self, message: str) -> SystemInstallError:
        return SystemInstallError(self.what, self.manager, message)


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
    manager: str = next((a["manager"] for a in step["actions"] if "manager" in a), "unknown")
    result = HostResult(id=step["id"], version=step["version"], manager=manager)

    def emit(line: str) -> None:
        result.lines.append(line[:2000])
        if on_line is not None:
            on_line(line)

    check = step.get("check")
    if check is not None and _check(check) is None:
        result.already_present = True
        result.check = "ok: already present on this host"
        result.seconds = time.monotonic() - started
        return result
    try:
        job = _Job(what, packagers.get(manager), settings, emit)
    except model.PlatformError as exc:
        raise SystemInstallError(what, manager, f"the plan's manager is unknown: {exc}") from exc
    packages = _packages(step)
    if check is None and packages and _installed(job, packages):
        result.already_present = True
        result.check = f"ok: {manager} reports {', '.join(packages)} installed on this host"
        result.seconds = time.monotonic() - started
        return result
    changed = False
    fetch_failures: list[str] = []
    for action in step["actions"]:
        kind = action["action"]
        if kind == "write_file":
            changed |= _write(job, Path(action["path"]), action["content"].encode())
        elif kind == "download":
            changed |= _download_key(job, action, fetch)
        elif kind == "run" and action.get("purpose") == "refresh":
            index = _index(job)
            if index is not None and not changed and _recent(job, index):
                emit(f"runner-agent: {manager}'s index is recent on this host; not refreshing")
                continue
            done = _run(job, action["argv"], action)
            if not job.packager.succeeded(done.returncode):
                raise job.fail(f"the index refresh failed: {done.describe()}")
            result.refreshed = True
            fetch_failures = job.packager.failed_fetches(done.output)
            if index is not None and not fetch_failures:
                (index / STAMP_NAME).touch()
        elif kind == "run":
            cache = job.packager.with_cache(action["argv"], settings.package_cache)
            for folder in cache.folders:
                Path(folder).mkdir(parents=True, exist_ok=True)
            with exclusive(manager):
                done = _run(job, cache.argv, action)
            if not job.packager.succeeded(done.returncode):
                asked = action.get("packages", [])
                failure = packagers.Failure(
                    output=done.output,
                    returncode=done.returncode,
                    packages=tuple(p for p in asked if p in action["argv"]) or tuple(asked),
                    fetch_failures=tuple(fetch_failures),
                )
                raise job.fail(job.packager.explain(failure) or done.describe())
        else:
            raise job.fail(f"unknown action {kind!r} in the plan")
    if check is not None:
        problem = _check(check)
        if problem is not None:
            raise job.fail(f"installed, but the check failed: {problem}")
        result.check = "ok"
    result.seconds = time.monotonic() - started
    return result


def _packages(step: wire.SystemStep) -> tuple[str, ...]:
    """Every package the step's installs ask for, in order, once."""
    asked = (
        name
        for action in step["actions"]
        if action.get("purpose") == "install"
        for name in action.get("packages", [])
    )
    return tuple(dict.fromkeys(asked))


def _installed(job: _Job, packages: tuple[str, ...]) -> bool:
    """Whether the manager's own query says every package is installed (a query that
    cannot run, or a manager without a query it can trust, says no: the install then runs
    and speaks for itself)."""
    queries = job.packager.installed_queries(packages)
    if packages and not queries:
        return False
    for query in queries:
        env = environ.clean(dict(query.env), fixed_locale=True, host=True)
        try:
            done = procs.run(query.argv, env=env, timeout=_QUERY_TIMEOUT, cwd="/")
        except procs.ProcError:
            return False
        if not job.packager.says_installed(query, done.returncode, done.output):
            return False
    return True


def _index(job: _Job) -> Path | None:
    if job.packager.index_folder is None:
        return None
    return job.settings.index_folder or Path(job.packager.index_folder)


def _recent(job: _Job, index: Path) -> bool:
    """Whether the last complete refresh on this host is newer than the interval, and
    the index it fetched is still there (the files the manager's module names)."""
    interval = job.settings.index_refresh_seconds
    if interval <= 0 or not any(index.glob(job.packager.index_glob)):
        return False
    try:
        age = time.time() - (index / STAMP_NAME).stat().st_mtime
    except OSError:
        return False
    return age < interval


def _run(job: _Job, argv: Sequence[str], action: wire.SystemAction) -> procs.Finished:
    if job.packager.lock_files:
        _wait_for_locks(job)
    env = environ.clean(action.get("env", {}), fixed_locale=True, host=True)
    try:
        return procs.run(
            argv, env=env, timeout=job.settings.step_timeout, on_line=job.emit, cwd="/"
        )
    except procs.ProcError as exc:
        raise job.fail(str(exc)) from exc


def _holder(path: Path) -> int | None:
    """The pid holding a write lock on ``path`` (fcntl, as apt takes them), or ``None``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, probe))
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else pid


def _wait_for_locks(job: _Job) -> None:
    timeout = job.settings.lock_timeout
    deadline = time.monotonic() + timeout
    reported = 0.0
    locks = [Path(name) for name in job.packager.lock_files]
    while True:
        held = [(path, pid) for path in locks if (pid := _holder(path)) is not None]
        if not held:
            return
        path, pid = held[0]
        now = time.monotonic()
        if now >= deadline:
            raise job.fail(
                f"{path} is still locked by pid {pid} ({_command(pid)}) after {timeout:g} s; "
                "wait for that package manager run to end, or raise "
                "installer.package_lock_timeout_seconds"
            )
        if now - reported >= _LOCK_REPORT_EVERY:
            job.emit(f"runner-agent: waiting for {path}, held by pid {pid} ({_command(pid)})")
            reported = now
        time.sleep(0.25)


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "unknown command"
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:80] or "unknown command"


def _check(check: wire.Check) -> str | None:
    """``None`` when the check passes, else what it printed."""
    env = environ.clean(fixed_locale=True, host=True)
    try:
        done = procs.run(check["argv"], env=env, timeout=60.0, cwd="/")
    except procs.ProcError as exc:
        return str(exc)
    if done.ok and check["expect"] in done.output:
        return None
    return done.describe(200)


def _allowed(job: _Job, path: Path) -> None:
    folders = job.packager.repository_folders
    if str(path.parent) not in folders or path.name in ("", ".", ".."):
        raise job.fail(
            f"the plan writes {path}, outside {job.manager}'s repository folders "
            f"({', '.join(folders) or 'none'}); refusing"
        )


def _write(job: _Job, path: Path, content: bytes) -> bool:
    """Write ``content`` atomically; whether the file changed."""
    _allowed(job, path)
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


def _download_key(job: _Job, action: wire.SystemAction, fetch: Fetch) -> bool:
    dest = Path(action["dest"])
    _allowed(job, dest)
    with tempfile.TemporaryDirectory() as folder:
        temp = Path(folder) / "key"
        try:
            fetch(action["url"], temp)
        except Exception as exc:
            raise job.fail(f"cannot fetch the repository key {action['url']}: {exc}") from exc
        content = temp.read_bytes()
    if b"BEGIN PGP PUBLIC KEY BLOCK" not in content and not content.startswith(b"\x99"):
        digest = hashlib.sha256(content).hexdigest()[:12]
        raise job.fail(
            f"{action['url']} is not an OpenPGP key ({len(content)} bytes, sha256 {digest}...)"
        )
    return _write(job, dest, content)
