"""``runner-agent ensure``: install features into the store on this host and print the env."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any

from agent.cli import common


def add_parsers(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``ensure``."""
    ensure = sub.add_parser(
        "ensure",
        help="install features into the store (host mode) and print what to export",
        description=(
            "Resolve feature requests for a target platform (this machine by default), "
            "install what the store lacks, and print the environment to export: shell "
            "lines, JSON, or (--format github) appended to $GITHUB_PATH and $GITHUB_ENV."
        ),
    )
    ensure.add_argument("requests", nargs="+", metavar="REQUEST")
    ensure.add_argument(
        "--target-platform", help="os/arch[/libc], e.g. linux/x64/glibc (default: this machine)"
    )
    ensure.add_argument("--package-manager", help="apt, dnf, apk, ...")
    ensure.add_argument("--format", choices=["shell", "json", "github"], default="shell")
    config_arg(ensure)
    ensure.set_defaults(run=run_ensure)


def run_ensure(args: argparse.Namespace) -> int:
    """Resolve, install, print."""
    from agent.catalog import loading as catalog_loading
    from agent.catalog import requests, resolver
    from agent.platform import detect, model
    from agent.store import ensuring as store_ensuring
    from agent.store import installing, layout, locks
    from agent.system import hostinstall

    settings = common.settings(args)
    local = detect.detect()
    try:
        if args.target_platform:
            parsed = model.Platform.parse_triple(args.target_platform)
            target = model.Platform(
                os=parsed.os,
                arch=parsed.arch,
                libc=parsed.libc,
                package_manager=args.package_manager
                or (local.package_manager if parsed.os == local.os else None),
            )
        else:
            target = local
    except model.PlatformError as exc:
        return common.fail(str(exc), common.EXIT_USAGE)
    catalog = catalog_loading.load(catalog_loading.folders_for(settings.catalog))
    try:
        wanted = [
            requests.parse(r, allow_ranges=not r.lower().startswith(requests.PREFIX), source="cli")
            for r in args.requests
        ]
        plan = resolver.resolve(wanted, catalog, target, store_root=str(settings.cache.root))
    except (requests.RequestError, resolver.ResolutionError) as exc:
        for line in str(exc).splitlines():
            print(f"runner-agent: {line}", file=sys.stderr)
        return common.EXIT_BAD
    same = (target.os, target.arch, target.libc) == (local.os, local.arch, local.libc)
    options = installing.options_from(settings.installer, native=same)
    try:
        backend = locks.backend(settings.cache.lock_backend, lease_ttl=settings.cache.lease_seconds)
        store = layout.Store(settings.cache.root)
        host = target == local or (same and target.package_manager == local.package_manager)
        ensured = store_ensuring.ensure_plan(
            store,
            plan.to_data(),
            lock_backend=backend,
            options=options,
            parallelism=settings.installer.parallelism,
            system=system_handler(settings, store, backend, options) if host else None,
        )
    except (layout.StoreError, hostinstall.SystemInstallError) as exc:
        return common.fail(str(exc))
    emit(ensured.to_data(), args.format)
    return common.EXIT_OK


def system_handler(settings: Any, store: Any, backend: Any, options: Any) -> Any:
    """Host mode: run ``system`` steps here, their output streamed to stderr."""
    import shutil

    from agent.store import downloads
    from agent.system import hostinstall

    installer = settings.installer
    cache = installer.package_cache or store.meta / "packages"
    host = hostinstall.HostSettings(
        package_cache=cache,
        index_refresh_seconds=installer.index_refresh_seconds,
        lock_timeout=float(installer.package_lock_timeout_seconds),
        step_timeout=installer.step_timeout_seconds,
    )

    def fetch(url: str, dest: Any) -> None:
        artifact = downloads.fetch(
            url, downloads.DownloadCache(store.downloads), sha256=None, policy=options.policy
        )
        shutil.copyfile(artifact.path, dest)

    def exclusive(manager: str) -> Any:
        # The package manager's own lock on its cache is per host; hosts sharing the
        # volume take this one as well.
        cache.mkdir(parents=True, exist_ok=True)
        return backend.hold(
            cache / f"{manager}.lock",
            what=f"the shared {manager} package cache",
            timeout=installer.lock_timeout_seconds,
        )

    def handle(step: dict[str, Any]) -> dict[str, Any]:
        done = hostinstall.install(
            step,
            host,
            fetch=fetch,
            exclusive=exclusive,
            on_line=lambda line: print(f"  {step['id']}: {line}", file=sys.stderr, flush=True),
        )
        return {
            "id": done.id,
            "version": done.version,
            "manager": done.manager,
            "already_present": done.already_present,
            "refreshed": done.refreshed,
            "seconds": round(done.seconds, 3),
            "check": done.check,
        }

    return handle


def emit(data: dict[str, Any], fmt: str) -> None:
    """Print (or, for github, append) the environment."""
    if fmt == "json":
        print(json.dumps(data, indent=2))
        return
    if fmt == "github":
        path_file, env_file = os.environ.get("GITHUB_PATH"), os.environ.get("GITHUB_ENV")
        if not path_file or not env_file:
            raise SystemExit(common.fail("--format github needs $GITHUB_PATH and $GITHUB_ENV"))
        with open(path_file, "a", encoding="utf-8") as handle:
            handle.writelines(f"{p}\n" for p in data["path"])
        with open(env_file, "a", encoding="utf-8") as handle:
            handle.writelines(f"{k}={v}\n" for k, v in data["vars"].items())
        return
    if data["path"]:
        print(f'export PATH={shlex.quote(os.pathsep.join(data["path"]))}:"$PATH"')
    for name, value in data["vars"].items():
        print(f"export {name}={shlex.quote(value)}")
