"""The install protocol: check, lock, check again, stage, fetch, extract, verify, publish.

1. **Check**: the marker exists and the receipt names this entry: done, nothing else.
2. **Lock** the entry (see :mod:`agent.store.locks`), then **check again**: another pod
   may have finished it while this one waited.
3. **Stage** into a fresh folder under ``<root>/.runner-agent/staging``, on the same
   filesystem as the entry, so publishing is one ``rename()``.
4. **Fetch** each artifact through the content-addressed download cache, verifying its
   sha256 while streaming (see :mod:`agent.store.downloads`).
5. **Extract** safely into the staging folder (see :mod:`agent.store.extracting`).
6. **Check** the feature by running its ``check`` command from the staged folder, when
   the target is the platform the agent runs on.
7. **Publish**: fsync the tree, ``rename()`` it into place, write the receipt, then the
   marker (both write-temp-then-rename).
8. **Unlock**.

Policy: any failure leaves nothing at the final path: the staging folder is removed and
the error (an :class:`InstallError`) names the failing step, as does the log kept at
``<root>/.runner-agent/logs/<key>.log``. A half-published entry (renamed, but its
marker never written, because the process died) is invisible to readers and is replaced
by the next install under the lock. Entries hold no absolute path into the agent's
container: env paths are stored relative to the entry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import __version__
from agent.store import downloads, extracting, layout, locks, receipts, running

logger = logging.getLogger("agent.store")


class InstallError(layout.StoreError):
    """An install failed at :attr:`step`; nothing was published."""

    def __init__(self, what: str, step: str, message: str) -> None:
        self.step = step
        super().__init__(f"installing {what} failed at step '{step}': {message}")


@dataclass(frozen=True)
class Options:
    """How installs behave; from the agent's ``installer`` settings."""

    lock_timeout: float = 900.0
    policy: downloads.Policy = field(default_factory=downloads.Policy)
    limits: extracting.Limits = field(default_factory=extracting.Limits)
    check_timeout: float = 120.0
    run_timeout: float = 900.0
    """Seconds a step's command (pip, a script) may run."""
    run_check: bool = True
    """False when the target is not the platform the agent runs on."""


@dataclass(frozen=True)
class Installed:
    """An entry that is ready."""

    entry: layout.Entry
    receipt: receipts.Receipt
    cached: bool


# --- the warm path ----------------------------------------------------------------------

_verified: dict[str, tuple[tuple[int, int, int], receipts.Receipt]] = {}


def _marker_id(entry: layout.Entry) -> tuple[int, int, int] | None:
    try:
        st = os.stat(entry.marker)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def lookup(entry: layout.Entry, *, feature: str, version: str) -> receipts.Receipt | None:
    """The receipt of a complete entry of ``feature`` at ``version``, or ``None`` if absent.

    Verified state is cached in the process: once an entry's marker and receipt agree,
    the entry is trusted for as long as its marker is the same file (device, inode and
    mtime unchanged) and its folder exists; a hit costs two ``stat()`` calls. An entry
    replaced elsewhere gets a new marker and is verified again. On NFS, attribute caching
    can serve a removed entry for up to ``acregmax`` seconds: eviction (a later feature)
    must leave that grace.

    A marker whose receipt cannot be read, or names another feature, is an error, never
    a miss: the entry may be in use, so it is reported and left alone.
    """
    marker = _marker_id(entry)
    if marker is None:
        _verified.pop(entry.key, None)
        return None
    cached = _verified.get(entry.key)
    if cached is not None and cached[0] == marker:
        known = cached[1]
        if known.feature == feature and known.version == version and entry.path.is_dir():
            return known
    try:
        receipt = receipts.read(entry)
    except layout.StoreError as exc:
        raise layout.StoreError(
            f"{entry.key} has a marker but its receipt cannot be used ({exc}); the entry is "
            f"left alone: fix or remove {entry.marker} and {entry.receipt} by hand"
        ) from exc
    if receipt is None or receipt.key != entry.key or not entry.path.is_dir():
        raise layout.StoreError(
            f"{entry.key} has a marker but no matching receipt or folder; the entry is left "
            f"alone: remove {entry.marker} to have it installed again"
        )
    if receipt.feature != feature or receipt.version != version:
        raise layout.StoreError(
            f"{entry.key} holds {receipt.feature} {receipt.version}, not {feature} {version}: "
            "two features share a tool cache name; give one another toolcache_name"
        )
    _verified[entry.key] = (marker, receipt)
    return receipt


# --- installing ---------------------------------------------------------------------------


def install(
    store: layout.Store,
    step: dict[str, Any],
    *,
    lock_backend: locks.LockBackend,
    options: Options | None = None,
) -> Installed:
    """Make the plan step's entry present (an ``archive`` step), installing it if needed."""
    options = options or Options()
    what = f"{step['id']} {step['version']}"
    prefix = Path(step["prefix"])
    entry = store.entry(prefix.parent.parent.name, prefix.parent.name, prefix.name)
    found = lookup(entry, feature=step["id"], version=step["version"])
    if found is not None:
        receipts.touch(entry)
        return Installed(entry, found, cached=True)
    if step["method"] not in ("archive", "pip", "npm"):
        raise InstallError(
            what, "plan", f"the {step['method']} method is not handled by the store installer"
        )
    for action in step["actions"]:
        name = action.get("file", "x")
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise InstallError(what, "plan", f"{name!a} is not a plain file name")

    store.prepare()  # the cold path: the volume may have changed under this process

    def finished() -> bool:
        # While waiting: the holder may publish the entry, and then there is no need to
        # queue for the lock at all.
        return _marker_id(entry) is not None

    try:
        with lock_backend.hold(entry.lock, what=what, timeout=options.lock_timeout, done=finished):
            found = lookup(entry, feature=step["id"], version=step["version"])
            if found is not None:  # another agent finished it while this one waited
                return Installed(entry, found, cached=True)
            _sweep(store, entry)
            receipt = _install_locked(store, entry, step, what, options)
            return Installed(entry, receipt, cached=False)
    except locks.NotNeeded:
        found = lookup(entry, feature=step["id"], version=step["version"])
        if found is None:  # pragma: no cover - the marker vanished again at once
            raise InstallError(what, "lock", "the entry appeared and vanished; retry") from None
        return Installed(entry, found, cached=True)


def _sweep(store: layout.Store, entry: layout.Entry) -> None:
    """Remove what killed installs of this entry left behind (we hold its lock)."""
    for stale in store.staging.glob(f"{entry.key}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    parent = entry.path.parent
    for trash in parent.glob(f".{entry.leaf}.stale-*") if parent.is_dir() else ():
        if trash.is_symlink():
            trash.unlink(missing_ok=True)
        else:
            shutil.rmtree(trash, ignore_errors=True)


class _Log:
    """The kept install log: one line per step, with times."""

    def __init__(self, store: layout.Store, entry: layout.Entry) -> None:
        folder = store.meta / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{entry.key}.log"
        self.start = time.monotonic()
        self.lines: list[str] = []

    def step(self, name: str, detail: str = "") -> None:
        self.lines.append(f"{time.monotonic() - self.start:8.3f}s {name} {detail}".rstrip())

    def save(self) -> None:
        try:
            layout.write_atomic(self.path, ("\n".join(self.lines) + "\n").encode())
        except OSError as exc:  # the log must never be the reason an install fails
            logger.warning("cannot write the install log %s: %s", self.path, exc)


def _install_locked(
    store: layout.Store,
    entry: layout.Entry,
    step: dict[str, Any],
    what: str,
    options: Options,
) -> receipts.Receipt:
    staging = store.staging / f"{entry.key}.{uuid.uuid4().hex}"
    current = "stage"
    log: _Log | None = None
    try:
        log = _Log(store, entry)
        log.step("stage", str(staging.name))
        staging.mkdir()
        tree = staging / "entry"
        tree.mkdir()
        os.chmod(tree, 0o755)  # noqa: S103 - other UIDs read the store, whatever the umask
        cache = downloads.DownloadCache(store.downloads)
        sources: list[receipts.Source] = []
        archive: downloads.Artifact | None = None
        for action in step["actions"]:
            if action["action"] == "download":
                current = "download"
                archive = _download(action, cache, options, log)
                sources.append(receipts.Source(archive.url, archive.sha256, archive.size))
            elif action["action"] == "extract":
                current = "extract"
                if archive is None:
                    raise layout.StoreError("the plan extracts before it downloads")
                source = archive.path
                if action["format"] == "binary":
                    # The cache names files by hash; a lone binary keeps its own name.
                    source = staging / action["file"]
                    shutil.copyfile(archive.path, source)
                done = extracting.extract(
                    source,
                    tree,
                    fmt=action["format"],
                    strip_components=action["strip_components"],
                    limits=options.limits,
                )
                log.step("extract", f"{done.members} members, {done.bytes} bytes")
            elif action["action"] == "run" and step["method"] == "pip":
                current = "pip"
                sources += _pip(action, step, staging, tree, options, log)
            elif action["action"] == "run" and step["method"] == "npm":
                current = "npm"
                _npm(action, step, staging, tree, options, log)
            else:
                raise layout.StoreError(f"unknown action {action['action']!r}")
        rel_path = [os.path.relpath(p, step["prefix"]) for p in step["env"]["path"]]
        current = "check"
        outcome = _check(step, tree, rel_path, options)
        log.step("check", outcome)
        current = "publish"
        _fsync_tree(tree)
        receipt = receipts.Receipt(
            feature=step["id"],
            version=step["version"],
            key=entry.key,
            platform=step.get("platform", {}),
            method=step["method"],
            sources=tuple(sources),
            size=receipts.tree_size(tree),
            install_seconds=round(time.monotonic() - log.start, 3),
            agent_version=__version__,
            created=time.time(),
            check=outcome,
            env={"path": rel_path, "vars": _relative_vars(step)},
        )
        _publish(entry, tree, receipt, staging=staging)
        log.step("publish", str(entry.path.relative_to(store.root)))
        logger.info(
            "installed %s into the store",
            what,
            extra={"entry": entry.key, "seconds": receipt.install_seconds},
        )
        return receipt
    except Exception as exc:
        if log is not None:
            log.step("failed", f"{current}: {exc}")
        if isinstance(exc, InstallError):
            raise
        raise InstallError(what, current, str(exc)) from exc
    finally:
        if log is not None:
            log.save()
        shutil.rmtree(staging, ignore_errors=True)


PREFIX_VAR = "${prefix}"


def _relative_vars(step: dict[str, Any]) -> dict[str, str]:
    """Variables with the install prefix replaced by ``${prefix}``: entries must work
    wherever the volume is mounted (runner container, job containers at ``/__t``)."""
    prefix = step["prefix"]
    return {k: v.replace(prefix, PREFIX_VAR) for k, v in step["env"]["vars"].items()}


def _pip(
    action: dict[str, Any],
    step: dict[str, Any],
    staging: Path,
    tree: Path,
    options: Options,
    log: _Log,
) -> list[receipts.Source]:
    """pip install --target the staging tree, recording the wheels it took."""
    report = staging / "pip-report.json"
    argv = running.resolve_argv(action["argv"], prefix=step["prefix"], staging=tree)
    argv[argv.index("install") + 1 : argv.index("install") + 1] = [
        "--report",
        str(report),
        "--no-warn-script-location",
    ]
    output = running.run(
        argv,
        env=running.environment(action["env"]),
        cwd=staging,
        timeout=options.run_timeout,
    )
    log.step("pip", output.strip().splitlines()[-1][:200] if output.strip() else "")
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return []
    sources = []
    for item in data.get("install", []):
        info = item.get("download_info", {})
        hashes = info.get("archive_info", {}).get("hashes", {})
        sha = hashes.get("sha256") or info.get("archive_info", {}).get("hash", "").partition("=")[2]
        sources.append(receipts.Source(url=info.get("url", ""), sha256=sha, size=0))
    return sources


def _npm(
    action: dict[str, Any],
    step: dict[str, Any],
    staging: Path,
    tree: Path,
    options: Options,
    log: _Log,
) -> None:
    """npm install --global --prefix the staging tree: bin/ holds relative links into
    lib/node_modules, so the entry works wherever the volume is mounted."""
    argv = running.resolve_argv(action["argv"], prefix=step["prefix"], staging=tree)
    env = running.environment(action["env"])
    env.setdefault("npm_config_cache", str(staging / "npm-cache"))  # not the agent's HOME
    output = running.run(argv, env=env, cwd=staging, timeout=options.run_timeout)
    log.step("npm", output.strip().splitlines()[-1][:200] if output.strip() else "")
    for link in (tree / "bin").iterdir() if (tree / "bin").is_dir() else ():
        if link.is_symlink() and os.path.isabs(os.readlink(link)):
            raise layout.StoreError(
                f"npm left an absolute link {link.name} -> {os.readlink(link)}; the entry "
                "would break where the volume is mounted elsewhere"
            )


def _download(
    action: dict[str, Any],
    cache: downloads.DownloadCache,
    options: Options,
    log: _Log,
) -> downloads.Artifact:
    sha = action.get("sha256")
    if sha is None:
        sha = downloads.fetch_checksum(
            action["checksum_url"], action["file"], policy=options.policy
        )
        log.step("checksum", f"{action['file']} {sha}")
    artifact = downloads.fetch(action["url"], cache, sha256=sha, policy=options.policy)
    log.step("download", f"{artifact.url} {artifact.size} bytes sha256 {artifact.sha256}")
    return artifact


def _check(step: dict[str, Any], tree: Path, rel_path: list[str], options: Options) -> str:
    check = step.get("check")
    if check is None:
        return "no check declared"
    if not options.run_check:
        return "skipped: the target is not the platform the agent runs on"
    path = [os.path.normpath(os.path.join(tree, p)) for p in rel_path]
    env = {**os.environ, "PATH": os.pathsep.join([*path, os.environ.get("PATH", "")])}
    env.update({k: v for k, v in step["env"]["vars"].items()})
    try:
        proc = subprocess.run(
            check["argv"],
            env=env,
            capture_output=True,
            text=True,
            timeout=options.check_timeout,
            check=False,
            cwd=tempfile.gettempdir(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise layout.StoreError(f"the check {check['argv']!r} could not run: {exc}") from exc
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or check["expect"] not in output:
        raise layout.StoreError(
            f"the check {' '.join(check['argv'])!r} exited {proc.returncode} and printed "
            f"{output[:200]!r}; expected it to print {check['expect']!r}"
        )
    return f"ok: {output.splitlines()[0][:120] if output else ''}"


def _fsync_tree(tree: Path) -> None:
    for folder, _, files in os.walk(tree):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        layout.fsync_dir(Path(folder))


def _publish(entry: layout.Entry, tree: Path, receipt: receipts.Receipt, *, staging: Path) -> None:
    # Refuse to build through symlinks: a link at <root>/<name> would send the entry
    # (and a later rmtree) somewhere else entirely.
    for part in (entry.path.parent.parent, entry.path.parent):
        if part.is_symlink():
            raise layout.StoreError(f"{part} is a symlink; the store only holds real folders")
        if not part.exists():
            part.mkdir(mode=0o755)
            os.chmod(part, 0o755)  # noqa: S103 - readable by the runner's UID
            layout.fsync_dir(part.parent)
    if entry.marker.exists():
        raise layout.StoreError(f"{entry.marker} appeared during the install; not replacing it")
    # The receipt first: nothing trusts it without the marker, and a failure writing it
    # leaves nothing at the final path.
    receipts.write(entry, receipt)
    if entry.path.exists() or entry.path.is_symlink():
        # Published by a process that died before its marker: nobody trusts it, and the
        # lock is ours, so it goes (renamed away first, so the final path is never half
        # deleted).
        trash = entry.path.with_name(f".{entry.path.name}.stale-{uuid.uuid4().hex[:8]}")
        os.rename(entry.path, trash)
        if trash.is_symlink():
            trash.unlink()
        else:
            shutil.rmtree(trash, ignore_errors=True)
    os.rename(tree, entry.path)
    try:
        layout.fsync_dir(entry.path.parent)
        # Staging goes before the marker: a process killed after its marker leaves no
        # leftovers, and one killed before it is swept by the next install anyway.
        shutil.rmtree(staging, ignore_errors=True)
        layout.write_atomic(entry.marker, b"")
    except BaseException:
        # No marker: take the tree back out, so a failure leaves nothing at the final path.
        trash = entry.path.with_name(f".{entry.path.name}.stale-{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(OSError):
            os.rename(entry.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        raise
