"""The daemon's long-running chores: the catalog load, the store's janitor and its
readiness check, preinstall, the pod annotator's start.

Policy: each runs its blocking part in a thread (imports, the volume, resolution) and
reports through the readiness conditions or the log; the daemon owns their tasks (each
under :func:`agent.kits.aiotasks.guard`) and their shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import models
from agent.kits import backoff

if TYPE_CHECKING:  # at run time each is imported in a thread, after the probes are up
    from prometheus_client import CollectorRegistry

    from agent.catalog import loading as catalog_loading
    from agent.install import coordinator, metrics
    from agent.jobs import metrics as jobs_metrics
    from agent.kube import annotator as kube_annotator
    from agent.observe import conditions as conditions_
    from agent.platform import plans as wire
    from agent.store import janitor

logger = logging.getLogger(__name__)

TALLY_EVERY = 15.0
"""Seconds between refreshes of the store's running total (what /metrics reports)."""


def _make_janitor(settings: models.CacheSettings, budget: Callable[[], int]) -> janitor.Janitor:
    from agent.store import janitor, layout, locks

    # The root and the lock backend need a restart; the budget is read live (reloads).
    backend = locks.backend(settings.lock_backend, lease_ttl=settings.lease_seconds)
    return janitor.Janitor(layout.Store(settings.root), backend, budget=budget)


def load_catalog(settings: models.CatalogSettings) -> tuple[catalog_loading.Catalog, list[Path]]:
    """The catalog the settings name, and its folders (blocking: run it in a thread)."""
    from agent.catalog import loading as catalog_loading

    folders = catalog_loading.folders_for(settings)
    return catalog_loading.load(folders), folders


STORE_CHECK_EVERY = 30.0
"""Seconds between checks of the store behind the ``store`` readiness condition."""


def _units(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def check_store(settings: models.CacheSettings) -> tuple[bool, str]:
    """The ``store`` condition: the root exists (it is created), is writable, has a
    format this agent reads, and has ``cache.min_free_bytes`` free (blocking)."""
    from agent.store import layout

    root = settings.root
    try:
        layout.Store(root).prepare()
        if not os.access(root, os.W_OK):
            return False, f"the store at {root} is not writable by the agent (cache.root)"
        st = os.statvfs(root)
    except layout.StoreError as exc:
        return False, str(exc)
    except OSError as exc:
        return False, f"cannot check the store at {root}: {exc.strerror or exc}"
    if st.f_flag & os.ST_RDONLY:
        return False, f"the store at {root} is on a read-only volume; mount it writable"
    free = st.f_bavail * st.f_frsize
    if free < settings.min_free_bytes:
        return False, (
            f"the store's volume at {root} has {_units(free)} free, under "
            f"cache.min_free_bytes ({_units(settings.min_free_bytes)}): free space, or "
            "lower cache.size_budget so the janitor evicts more"
        )
    return True, f"{root}: {_units(free)} free"


async def watch_store(
    settings: Callable[[], models.Settings], conditions: conditions_.Conditions
) -> None:
    """Keep the ``store`` condition current, forever (each check in a thread: the
    volume may be slow NFS)."""
    while True:
        ok, message = await asyncio.to_thread(check_store, settings().cache)
        conditions.set("store", ok=ok, message=message)
        await asyncio.sleep(STORE_CHECK_EVERY)


async def run_janitor(
    settings: Callable[[], models.Settings], publish: Callable[[janitor.Janitor], None]
) -> None:
    """Refresh the store's running total and run janitor passes, forever."""
    # Built in a thread (it imports the store's modules); then the running total is
    # refreshed every TALLY_EVERY s and a janitor pass (gc, eviction to the budget) runs
    # every cache.janitor_interval_seconds, jittered so pods started together do not
    # try in step. Each in a thread: the volume may be slow NFS.
    cache = await asyncio.to_thread(
        _make_janitor, settings().cache, lambda: int(settings().cache.size_budget)
    )
    publish(cache)
    loop = asyncio.get_running_loop()
    interval = settings().cache.janitor_interval_seconds
    due = loop.time() + interval * random.uniform(0.5, 1.0)  # noqa: S311 - not crypto
    last_error = ""
    while True:
        try:
            if loop.time() >= due:
                await asyncio.to_thread(cache.periodic)
                due = loop.time() + settings().cache.janitor_interval_seconds
            else:
                await asyncio.to_thread(cache.refresh)
            last_error = ""
        except Exception as exc:  # counted as failed by the janitor; the task goes on
            due = loop.time() + settings().cache.janitor_interval_seconds
            if str(exc) != last_error:
                logger.warning("the store's janitor failed: %s", exc)
            last_error = str(exc)
        await asyncio.sleep(max(0.05, min(TALLY_EVERY, due - loop.time())))


def install_metrics(registry: CollectorRegistry) -> metrics.InstallMetrics:
    """The install metrics, on the agent's registry (built once, by the daemon)."""
    from agent.install import metrics

    return metrics.InstallMetrics(registry)


def job_metrics(registry: CollectorRegistry) -> jobs_metrics.JobMetrics:
    """The job metrics, on the agent's registry (built once, by the daemon)."""
    from agent.jobs import metrics as jobs_metrics

    return jobs_metrics.JobMetrics(registry)


def pod_annotator(
    settings: Callable[[], models.Settings], registry: CollectorRegistry
) -> kube_annotator.Annotator | None:
    """The pod annotator, if ``kubernetes.annotate_pod`` is on and the pod is found (API
    server, namespace, name); else ``None``, with one error logged and counted: the agent
    serves on without it, and readiness does not depend on it (blocking: run it in a
    thread, it imports the engine and may read the namespace file)."""
    from agent.kube import annotator, errors, incluster
    from agent.kube import metrics as kube_metrics

    counts = kube_metrics.AnnotationMetrics(registry)
    try:
        where = incluster.place(settings().kubernetes, os.environ)
    except errors.NotConfigured as exc:
        logger.error("pod annotations are off: %s", exc)
        counts.updates.labels("error").inc()
        return None
    logger.info("annotating %s with the jobs it runs", where.describe())
    return annotator.Annotator(lambda: settings().kubernetes, counts)


def preinstall_plan(
    catalog: catalog_loading.Catalog, wanted: list[str], settings: models.Settings
) -> wire.Plan:
    """The plan for ``features.preinstall`` on this machine (blocking: run it in a thread)."""
    from agent.catalog import requests, resolver
    from agent.platform import detect
    from agent.sources import indexes

    parsed = [requests.parse(r, allow_ranges=True, source="features.preinstall") for r in wanted]
    wanting = resolver.wanting_index(parsed, catalog)
    looked = indexes.from_settings(settings).lookup(wanting) if wanting else None
    plan = resolver.resolve(
        parsed,
        catalog,
        detect.detect(),
        store_root=str(settings.cache.root),
        notes=looked.warnings if looked else (),
        indexed=looked.versions if looked else None,
    )
    return plan.to_data()


async def preinstall(
    settings: Callable[[], models.Settings],
    conditions: conditions_.Conditions,
    catalog: catalog_loading.Catalog,
    installs: coordinator.Coordinator,
) -> None:
    """Ensure ``features.preinstall``; /readyz waits for it (retried with backoff)."""
    from agent.install import plans  # loaded with the API, off the loop

    wanted = list(settings().features.preinstall)
    conditions.set("preinstall", ok=False, message=f"installing {', '.join(wanted)}")
    delays = backoff.Backoff(initial=10.0, maximum=300.0)
    while True:
        try:
            plan = await asyncio.to_thread(preinstall_plan, catalog, wanted, settings())
            ok, message = await plans.preinstall(installs, plan)
        except Exception as exc:  # a bad request or an unresolvable one: say so, retry
            ok, message = False, str(exc).splitlines()[0]
        conditions.set("preinstall", ok=ok, message=message)
        if ok:
            return
        delay = delays.next().seconds
        logger.warning("preinstall failed (%s); retrying in %.0f s", message, delay)
        await asyncio.sleep(delay)


def preload_api() -> None:
    """Import the API and the engines it serves (run it in a thread)."""
    # Run in a thread: the API's models and the engines cost import time that the loop
    # (and /healthz) must not wait for.
    from agent.http import api, context  # noqa: F401
    from agent.install import coordinator  # noqa: F401
    from agent.jobs import leases, metrics, registry  # noqa: F401


def preload_supervisor() -> None:
    """Import the supervisor (run it in a thread)."""
    # Run in a thread, like _preload_api: the supervisor's modules cost import time that
    # /healthz must not wait for.
    from agent.services import supervisor, upstream  # noqa: F401
