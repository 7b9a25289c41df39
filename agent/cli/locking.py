"""``runner-agent features lock``: write, or check, a repository's lock file.

Policy:
- the requests are those of ``--features`` and the team file (``--team``, else the
  working folder's ``.github/runner-config.yml``), merged as a job merges them;
- writing keeps what the lock already pins wherever it still meets the requests (a lock
  repeats builds; ``--upgrade [ID ...]`` re-resolves all, or the named features), and
  records for each platform asked (``--platform``, else this machine) what an install
  would download, fetched and verified into the download cache (trusted on first use);
  entries for the platforms not asked are kept for the versions still locked;
- ``--check`` uses no network: every entry must still be what the catalog would
  install (same URL, same pinned hash, same method, a version it lists) and every
  request must be locked; it lists each stale entry and exits 1 when there is one;
- the file is written whole (temporary file, then rename) and read bounded, without
  following a link.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli import common, lockcheck

if TYPE_CHECKING:  # imported where used: commands start fast
    from agent.catalog import loading as catalog_loading
    from agent.catalog import lockfile
    from agent.config import models as config_models
    from agent.platform import model


def add_parser(fsub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``features lock``."""
    lock = fsub.add_parser(
        "lock",
        help="write or check the lock file (.github/runner-agent.lock)",
        description=(
            "Resolve the requests (--features, and the team file) and write the exact "
            "version of each feature, and per platform the URL, sha256 and size of what "
            "it installs from, to the lock file. Installs given the lock (the GitHub "
            "source at the job's commit, runner-agent-hook ensure --lock) install exactly "
            "that and refuse an artifact that changed. --check verifies the lock against "
            "the catalog without the network: exit 0 when it is current, 1 when an entry "
            "is stale or a request is not locked."
        ),
    )
    lock.add_argument("--features", nargs="+", default=[], metavar="REQUEST")
    lock.add_argument(
        "--team", type=Path, help="a runner-config.yml (default: .github/runner-config.yml here)"
    )
    lock.add_argument("--environment", help="which environments.<name> of the team file applies")
    lock.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="OS/ARCH[/LIBC]",
        help="a platform to lock for, e.g. linux/arm64/glibc (repeatable; default: this machine)",
    )
    lock.add_argument(
        "--output", type=Path, default=None,
        help="the lock file (default: .github/runner-agent.lock)",
    )  # fmt: skip
    lock.add_argument(
        "--upgrade",
        nargs="*",
        default=None,
        metavar="ID",
        help="re-resolve these features (all, when none is named) instead of keeping their "
        "locked versions",
    )
    lock.add_argument("--check", action="store_true", help="verify the lock offline; write nothing")
    config_arg(lock)
    lock.set_defaults(run=run_lock)


def read(path: Path) -> lockfile.Lock:
    """The lock at ``path``, read without following a link and bounded; raises
    :class:`lockfile.LockError` (also for a file that cannot be read)."""
    from agent.catalog import lockfile

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise lockfile.LockError(
            [f"cannot be read ({exc.strerror}); give a regular file"], source=str(path)
        ) from exc
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # a FIFO would block
            raise lockfile.LockError(["is not a regular file"], source=str(path))
        data = handle.read(lockfile.MAX_BYTES + 1)
    return lockfile.parse(data, source=str(path))


def run_lock(args: argparse.Namespace) -> int:
    """Write or check the lock file."""
    from agent.catalog import lockfile
    from agent.cli import catalogs
    from agent.platform import model

    catalog, settings = catalogs._catalog(args)
    output: Path = args.output or Path(lockfile.PATH)
    team = args.team
    if team is None and Path(".github/runner-config.yml").is_file():
        team = Path(".github/runner-config.yml")
    if not args.features and team is None and not args.check:
        return common.fail(
            "nothing to lock: give --features (node@20 python@3.12 ...) or a team file "
            "(--team, or run where .github/runner-config.yml is)",
            common.EXIT_USAGE,
        )
    features = settings.features
    if args.environment:
        features = features.model_copy(update={"environment": args.environment})
    old = None
    if output.exists() or output.is_symlink():
        try:
            old = read(output)
        except lockfile.LockError as exc:
            if args.check:
                return lockcheck.problems(exc.problems, str(output))
            # A broken lock is rewritten from scratch, and said so.
            print(f"runner-agent: note: {exc}; writing it anew", file=sys.stderr)
    elif args.check:
        return common.fail(f"{output} does not exist: run runner-agent features lock to write it")
    try:
        targets = _targets(args.platform, old if args.check else None)
    except model.PlatformError as exc:
        return common.fail(str(exc), common.EXIT_USAGE)
    requested = list(args.features)
    if args.check and args.upgrade is not None:
        return common.fail("--check verifies the lock as it is: drop --upgrade", common.EXIT_USAGE)
    unknown = [u for u in args.upgrade or [] if u.lower() not in catalog.features]
    if unknown:
        return common.fail(
            f"--upgrade {' '.join(unknown)}: no such feature in the catalog", common.EXIT_USAGE
        )
    if args.check:
        assert old is not None
        return lockcheck.check(old, catalog, settings, targets, requested, team, features)
    keep = _kept(old, args.upgrade)
    return _write(keep, old, catalog, settings, targets, requested, team, features, output)


def _targets(given: list[str], lock: lockfile.Lock | None) -> list[model.Platform]:
    """The platforms to lock for: those given, else (checking) the lock's, else this one."""
    import dataclasses

    from agent.platform import detect, model, packagers

    local = detect.detect()
    triples = list(given)
    if not triples and lock is not None:
        triples = sorted({p.partition(";")[0] for _, _, p, _ in lock.entries()})
    if not triples:
        return [local]
    found = []
    for triple in dict.fromkeys(triples):
        parsed = model.Platform.parse_triple(triple)
        if parsed.os == "linux" and parsed.libc is None:
            parsed = dataclasses.replace(parsed, libc="glibc")  # what linux/x64 jobs are
        if parsed.triple == local.triple:
            found.append(local)
            continue
        # Another platform: this machine's package manager on the same OS, else that OS's
        # usual one, so features that install with it resolve (they lock nothing).
        same = parsed.os == local.os
        manager = local.package_manager if same else packagers.manager_for("unknown", os=parsed.os)
        found.append(dataclasses.replace(parsed, package_manager=manager))
    return found


def _kept(old: lockfile.Lock | None, upgrade: list[str] | None) -> lockfile.Lock | None:
    """What of the old lock pins versions: all of it, none (``--upgrade``), or all but
    the features named."""
    from agent.catalog import lockfile

    if old is None or upgrade == []:
        return None
    if upgrade is None:
        return old
    named = {u.lower() for u in upgrade}
    return lockfile.Lock({k: v for k, v in old.features.items() if k not in named})


def _write(
    keep: lockfile.Lock | None,
    old: lockfile.Lock | None,
    catalog: catalog_loading.Catalog,
    settings: config_models.Settings,
    targets: list[model.Platform],
    given: list[str],
    team: Path | None,
    features: config_models.FeaturesSettings,
    output: Path,
) -> int:
    from agent.catalog import lockfile, planning
    from agent.install import artifacts, components, protocol
    from agent.install.fetch import downloads

    policy = protocol.options_from(settings.installer, native=True).policy
    new = lockfile.Lock()
    with _DownloadCache(settings) as cache:
        for target in targets:
            plan = lockcheck.resolve_for(
                given, team, catalog, settings, target, features, keep, online=True
            )
            if isinstance(plan, int):
                return plan
            for warning in plan.warnings:
                print(f"runner-agent: note: {warning}", file=sys.stderr)
            for step in plan.features:
                if step["method"] == "system":
                    continue  # the distribution's packages: nothing to pin
                key = planning.lock_key(catalog, step, target)
                try:
                    seen = artifacts.observe(step, cache, policy)
                except (downloads.DownloadError, components.ComponentError) as exc:
                    return common.fail(f"{step['id']} {step['version']} on {key}: {exc}")
                entry = lockfile.Entry(
                    method=step["method"],
                    artifacts=tuple(lockfile.Artifact(s.url, s.sha256, s.size) for s in seen),
                    vars=tuple(sorted(plan.vars.get(step["id"], {}).items())),
                )
                new.put(step["id"], step["version"], key, entry)
                shown = f"{len(seen)} artifact(s)" if seen else "version only"
                print(f"locked {step['id']} {step['version']} for {key}: {shown}", file=sys.stderr)
    asked = {t.triple for t in targets}
    for ident, version, key, entry in old.entries() if old else ():
        # Other platforms' entries stay for the versions this run locked too; a feature
        # this run moved on, or no longer asks for, goes (--check would call it stale).
        if key.partition(";")[0] in asked:
            continue
        if version in new.features.get(ident, {}):
            new.put(ident, version, key, entry)
        else:
            print(f"dropped {ident} {version} for {key}: no longer locked", file=sys.stderr)
    try:
        _save(output, new.dump())
    except OSError as exc:
        return common.fail(f"cannot write {output}: {exc.strerror}")
    print(f"wrote {output}: {len(new)} entries", file=sys.stderr)
    return common.EXIT_OK


class _DownloadCache:
    """The store's download cache, so the install after a lock downloads nothing; a
    temporary one where the store cannot be written (a laptop)."""

    def __init__(self, settings: config_models.Settings) -> None:
        self.settings = settings
        self.temporary: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Any:
        from agent.install.fetch import downloads
        from agent.store import layout

        try:
            store = layout.Store(self.settings.cache.root)
            store.open()
            return downloads.DownloadCache(store.downloads, store_root=store.root)
        except (OSError, layout.StoreError):
            self.temporary = tempfile.TemporaryDirectory(prefix="runner-agent-lock-")
            root = Path(self.temporary.name)
            return downloads.DownloadCache(root / "downloads", store_root=root)

    def __exit__(self, *exc: object) -> None:
        if self.temporary is not None:
            self.temporary.cleanup()


def _save(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
        os.chmod(temp, 0o644)  # a file to commit, read by everyone
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
