"""The install protocol: check, lock, check again, stage, fetch, extract, verify, publish.

1. **Check**: the marker exists and the receipt names this entry: done, nothing else.
2. **Lock** the entry (see :mod:`agent.store.locks`), then **check again**: another pod
   may have finished it while this one waited.
3. **Stage** into a fresh folder under ``<root>/.runner-agent/staging``, on the same
   filesystem as the entry, so publishing is one ``rename()``.
4. **Fetch** each artifact through the content-addressed download cache, verifying its
   sha256 while streaming (see :mod:`agent.install.fetch.downloads`).
5. **Extract** safely into the staging folder (see :mod:`agent.install.fetch.extracting`).
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

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent import __version__
from agent.config import models
from agent.install import artifacts, checking, components, methods, sandbox, watching
from agent.install.fetch import credentials, downloads, extracting, network
from agent.kits import progress, urls
from agent.platform import plans as wire
from agent.store import entries, installlog, layout, locks, nofollow, publishing, receipts

logger = logging.getLogger(__name__)


class InstallError(layout.StoreError):
    """An install failed at :attr:`step`; nothing was published."""

    def __init__(self, what: str, step: str, message: str, log: str | None = None) -> None:
        # The message may quote a mirror's or an index's URL (a tool's output, an
        # exception's text): it reaches clients and logs, so its credentials go.
        message = urls.hide_urls(message)
        self.what, self.step, self.detail, self.log = what, step, message, log
        where = f"; its install log is {log}" if log else ""
        super().__init__(f"installing {what} failed at step '{step}': {message}{where}")

    def __reduce__(self) -> tuple[type[InstallError], tuple[str, str, str, str | None]]:
        # Installs run in worker processes: the error must cross back intact.
        return (InstallError, (self.what, self.step, self.detail, self.log))


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
    script: sandbox.ScriptSettings = field(default_factory=sandbox.ScriptSettings)
    max_entry_bytes: int = watching.DEFAULT_MAX_ENTRY_BYTES
    """What one step may put in its staging folder, unless the manifest gives its own."""


def options_from(installer: models.InstallerSettings, *, native: bool) -> Options:
    """The install options the agent's ``installer`` settings describe."""
    first, _, last = installer.script_uid_range.partition("-")
    return Options(
        lock_timeout=installer.lock_timeout_seconds,
        policy=downloads.Policy(
            attempts=installer.download_attempts,
            stall_timeout=installer.stall_timeout_seconds,
            mirrors=tuple(installer.mirrors.items()),
            credentials=credentials.Credentials(
                headers=tuple(installer.mirror_headers.items()), netrc=installer.netrc
            ),
            network=network.Network(
                http_proxy=installer.http_proxy,
                https_proxy=installer.https_proxy,
                no_proxy=installer.no_proxy,
                ca_bundle=str(installer.ca_bundle) if installer.ca_bundle else None,
                pip_index_url=installer.pip_index_url,
                npm_registry=installer.npm_registry,
                pip_indexes=tuple(sorted(installer.pip_indexes.items())),
            ),
            connect_timeout=installer.connect_timeout_seconds,
        ),
        run_timeout=installer.step_timeout_seconds,
        run_check=native,
        script=sandbox.ScriptSettings(
            isolation=installer.script_isolation,
            user=installer.script_user,
            uid_range=(int(first), int(last)),
            max_processes=installer.script_max_processes,
            network=installer.script_network,
            remote_user=installer.script_remote_user,
            remote_user_home=f"/home/{installer.script_remote_user}",
        ),
        max_entry_bytes=int(installer.max_entry_bytes),
    )


_BUILDERS: dict[str, Callable[[methods.Build, wire.RunAction], list[receipts.Source] | None]] = {
    "pip": methods.pip,
    "npm": methods.npm,
    "script": methods.script,
}


def install(
    store: layout.Store,
    step: wire.ToolStep,
    *,
    lock_backend: locks.LockBackend,
    options: Options | None = None,
) -> entries.Installed:
    """Make the plan step's entry present (an ``archive`` step), installing it if needed."""
    options = options or Options()
    what = f"{step['id']} {step['version']}"
    entry = entries.entry_of(store, step["prefix"])
    found = entries.lookup(entry, feature=step["id"], version=step["version"])
    if found is not None:
        _as_locked(step, found, what)
        receipts.touch(entry)
        return entries.Installed(entry, found, cached=True)
    if step["method"] not in _BUILDERS and step["method"] != "archive":
        raise InstallError(
            what, "plan", f"the {step['method']} method is not handled by the store installer"
        )
    for action in step["actions"]:
        if action["action"] != "download" and action["action"] != "extract":
            continue
        name = action["file"]
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise InstallError(what, "plan", f"{name!a} is not a plain file name")

    store.prepare()  # the cold path: the volume may have changed under this process

    def finished() -> bool:
        # While waiting: the holder may publish the entry, and then there is no need to
        # queue for the lock at all.
        return entries.marker_id(entry) is not None

    try:
        with lock_backend.hold(entry.lock, what=what, timeout=options.lock_timeout, done=finished):
            found = entries.lookup(entry, feature=step["id"], version=step["version"])
            if found is not None:  # another agent finished it while this one waited
                _as_locked(step, found, what)
                return entries.Installed(entry, found, cached=True)
            publishing.sweep(store, entry)
            receipt = _install_locked(store, entry, step, what, options)
            return entries.Installed(entry, receipt, cached=False)
    except locks.NotNeeded:
        found = entries.lookup(entry, feature=step["id"], version=step["version"])
        if found is None:  # pragma: no cover - the marker vanished again at once
            raise InstallError(what, "lock", "the entry appeared and vanished; retry") from None
        _as_locked(step, found, what)
        return entries.Installed(entry, found, cached=True)


def _as_locked(step: wire.ToolStep, found: receipts.Receipt, what: str) -> None:
    """A step a lock file pins takes a ready entry only if its receipt says it was made
    from the pinned bytes: the entry is shared, and may have been installed (from the
    catalog) after the upstream changed what it serves."""
    missing = entries.not_as_locked(step, found)
    have = {s.sha256 for s in found.sources}
    if missing:
        made = ", ".join(sorted(have)[:3]) or "(none recorded)"
        raise InstallError(
            what,
            "lock",
            f"the store's entry was made from sha256 {made}, but the lock file pins "
            f"{', '.join(missing)}: the upstream's artifact changed since the lock was "
            f"written (or the lock was edited); run runner-agent features lock --upgrade "
            f"{step['id']} and review the diff. An entry made before this agent recorded "
            "what it came from (a components' manifest) installs again once removed from "
            "the store",
        )


def _install_locked(
    store: layout.Store,
    entry: layout.Entry,
    step: wire.ToolStep,
    what: str,
    options: Options,
) -> receipts.Receipt:
    staging = store.staging / f"{entry.key}.{uuid.uuid4().hex}"
    current = "stage"
    log: installlog.InstallLog | None = None
    try:
        log = installlog.InstallLog(store, entry)
        log.step("stage", str(staging.name))
        staging.mkdir()
        tree = staging / "entry"
        tree.mkdir()
        os.chmod(tree, 0o755)  # noqa: S103 - other UIDs read the store, whatever the umask
        cache = downloads.DownloadCache(store.downloads, store_root=store.root)
        sources: list[receipts.Source] = []
        archive: downloads.Artifact | None = None
        build = methods.Build(
            step=step,
            staging=staging,
            tree=tree,
            timeout=options.run_timeout,
            network=options.policy.network,
            log=log,
            native=options.run_check,
            script=options.script,
            max_entry_bytes=options.max_entry_bytes,
        )
        for action in step["actions"]:
            if action["action"] == "download":
                current = "download"
                archive = _download(action, cache, options, log)
                sources.append(receipts.Source(archive.url, archive.sha256, archive.size))
            elif action["action"] == "extract":
                current = "extract"
                progress.report("extracting")
                if archive is None:
                    raise layout.StoreError("the plan extracts before it downloads")
                source = archive.path
                if action["format"] == "binary":
                    # The cache names files by hash; a lone binary keeps its own name.
                    # In a folder of its own: the name is the manifest's, never the
                    # staging folder's own files (tree, logs).
                    lone = staging / "binary"
                    lone.mkdir()
                    source = lone / action.get("name", action["file"])
                    shutil.copyfile(archive.path, source)
                done = extracting.extract(
                    source,
                    tree,
                    fmt=action["format"],
                    strip_components=action["strip_components"],
                    limits=options.limits,
                    merge=tuple(action.get("merge", ())),
                )
                log.step("extract", f"{done.members} members, {done.bytes} bytes")
            elif action["action"] == "components":
                current = "components"
                sources += components.install(
                    action,
                    staging=staging,
                    tree=tree,
                    cache=cache,
                    policy=options.policy,
                    limits=options.limits,
                    log=log,
                )
            elif action["action"] == "run" and step["method"] in _BUILDERS:
                current = step["method"]
                progress.report("running", method=current)
                sources += _BUILDERS[step["method"]](build, action) or []
            else:
                raise layout.StoreError(f"unknown action {action['action']!r}")
        rel_path = [os.path.relpath(p, step["prefix"]) for p in step["env"]["path"]]
        changed = publishing.normalize_modes(tree)
        if changed:
            log.step("modes", f"{changed} modes normalised to 0755/0644")
        current = "check"
        progress.report("checking")
        outcome = _check(step, staging, tree, rel_path, options)
        log.step("check", outcome)
        current = "publish"
        publishing.fsync_tree(tree)
        receipt = receipts.Receipt(
            feature=step["id"],
            version=step["version"],
            key=entry.key,
            platform=dict(step.get("platform", {})),
            method=step["method"],
            sources=tuple(sources),
            size=receipts.tree_size(tree),
            install_seconds=round(time.monotonic() - log.start, 3),
            agent_version=__version__,
            created=time.time(),
            check=outcome,
            env={"path": rel_path, "vars": _relative_vars(step)},
            manifest=receipts.manifest(tree),  # what `cache verify` re-hashes against
        )
        publishing.publish(entry, tree, receipt, staging=staging)
        log.step("publish", str(entry.path.relative_to(store.root)))
        logger.info(
            "installed %s into the store",
            what,
            extra={"entry": entry.key, "seconds": receipt.install_seconds},
        )
        return receipt
    except Exception as exc:
        where = None
        if log is not None:
            log.step("failed", f"{current}: {exc}")
            where = str(log.path)
        if isinstance(exc, InstallError):
            if exc.log is None and where is not None:
                raise InstallError(exc.what, exc.step, exc.detail, where) from exc.__cause__
            raise
        raise InstallError(what, current, str(exc), where) from exc
    finally:
        if log is not None:
            log.save()
        nofollow.remove_path(staging)


def _relative_vars(step: wire.ToolStep) -> dict[str, str]:
    """Variables with the install prefix replaced by ``${prefix}``: entries must work
    wherever the volume is mounted (runner container, job containers at ``/__t``)."""
    prefix = step["prefix"]
    return {k: v.replace(prefix, entries.PREFIX_VAR) for k, v in step["env"]["vars"].items()}


def _download(
    action: wire.DownloadAction,
    cache: downloads.DownloadCache,
    options: Options,
    log: installlog.InstallLog,
) -> downloads.Artifact:
    def heard(sha: str) -> None:
        log.step("checksum", f"{action['file']} {sha}")

    artifact = artifacts.fetch(action, cache, options.policy, on_checksum=heard)
    log.step("download", f"{artifact.url} {artifact.size} bytes sha256 {artifact.sha256}")
    return artifact


def _limit(step: wire.ToolStep, options: Options) -> int:
    own = [a.get("max_entry_bytes", 0) for a in step["actions"] if a["action"] == "run"]
    return max(own, default=0) or options.max_entry_bytes


def _check(
    step: wire.ToolStep, staging: Path, tree: Path, rel_path: list[str], options: Options
) -> str:
    if step.get("check") is None:
        return "no check declared"
    if not options.run_check:
        return "skipped: the target is not the platform the agent runs on"
    return checking.run(
        step,
        staging=staging,
        tree=tree,
        rel_path=rel_path,
        timeout=options.check_timeout,
        script=options.script,
        # The check is measured on the same staging folder the build filled: the build's
        # limit, the manifest's own where it raised it.
        max_entry_bytes=_limit(step, options),
    )
