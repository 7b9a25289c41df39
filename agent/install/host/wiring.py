"""Host mode for ``system`` steps: the host executor wired to the store's downloads (for
repository keys) and lock backend (for the package cache shared across hosts).

Policy: one wiring, used by the API's coordinator and by ``runner-agent ensure --local``;
its output lines are reported as ``output`` progress events; it blocks (run it in a
thread). No aiohttp here: the CLI imports it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path

from agent.config import models
from agent.install.fetch import downloads
from agent.install.host import executor
from agent.kits import progress, urls
from agent.platform import plans as wire
from agent.store import layout, locks


def system_installer(
    settings: models.Settings,
    *,
    backend: locks.LockBackend,
    policy: downloads.Policy,
) -> Callable[[wire.SystemStep], wire.SystemReport]:
    """A callable that installs one ``system`` plan step on this host and describes it."""
    installer = settings.installer
    store = layout.Store(settings.cache.root)
    cache = installer.package_cache or store.meta / "packages"
    host = executor.HostSettings(
        package_cache=cache,
        index_refresh_seconds=installer.index_refresh_seconds,
        lock_timeout=float(installer.package_lock_timeout_seconds),
        step_timeout=installer.step_timeout_seconds,
    )

    def fetch(url: str, dest: Path) -> None:
        store.open()
        cache = downloads.DownloadCache(store.downloads, store_root=store.root)
        artifact = downloads.fetch(url, cache, sha256=None, policy=policy)
        shutil.copyfile(artifact.path, dest)

    def exclusive(manager: str) -> contextlib.AbstractContextManager[None]:
        # The package manager's own lock on its cache is per host; hosts sharing the
        # volume take this one as well.
        cache.mkdir(parents=True, exist_ok=True)
        return backend.hold(
            cache / f"{manager}.lock",
            what=f"the shared {manager} package cache",
            timeout=installer.lock_timeout_seconds,
        )

    def install(step: wire.SystemStep) -> wire.SystemReport:
        done = executor.install(
            step,
            host,
            fetch=fetch,
            exclusive=exclusive,
            on_line=lambda line: progress.report("output", line=urls.hide_urls(line)),
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

    return install
