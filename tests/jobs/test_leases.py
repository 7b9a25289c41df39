"""The jobs engine in process, on a real store folder: one lease per job covering every
entry its requests named, released when the job ends, at its deadline, or at close."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from agent.jobs import leases
from agent.store import inuse, layout


def plan(root: Path, *tools: str) -> dict[str, Any]:
    return {
        "features": [
            {"id": t, "prefix": str(root / t / "1.0.0" / "x64"), "method": "archive"} for t in tools
        ]
        + [{"id": "hello", "prefix": None, "method": "system"}]  # nothing of the store's
    }


@pytest.fixture
def store(tmp_path: Path) -> layout.Store:
    store = layout.Store(tmp_path / "store")
    store.prepare()
    return store


def held(store: layout.Store) -> dict[str, list[str]]:
    return {key: sorted(lease.job for lease in found) for key, found in inuse.live(store).items()}


async def test_a_job_leases_its_entries_and_releases_them_when_it_ends(
    store: layout.Store,
) -> None:
    jobs = leases.Leases()
    await jobs.lease(store, plan(store.root, "node"), job="run-1/build", max_seconds=600)
    assert held(store) == {"node@1.0.0@x64": ["run-1/build"]}
    assert await jobs.release("run-1/build") == 1
    assert held(store) == {}
    assert await jobs.release("run-1/build") == 0  # once only
    await jobs.close()


async def test_later_requests_of_a_job_widen_its_one_lease(store: layout.Store) -> None:
    jobs = leases.Leases()
    await jobs.lease(store, plan(store.root, "node"), job="j", max_seconds=600)
    await jobs.lease(store, plan(store.root, "go"), job="j", max_seconds=600)
    await jobs.lease(store, plan(store.root, "node"), job="j", max_seconds=600)  # no change
    assert held(store) == {"node@1.0.0@x64": ["j"], "go@1.0.0@x64": ["j"]}
    assert len(inuse.leases(store)) == 1  # the old lease went once the new one held
    await jobs.close()
    assert held(store) == {}


async def test_a_job_that_never_ends_is_released_at_its_deadline(store: layout.Store) -> None:
    jobs = leases.Leases()
    await jobs.lease(store, plan(store.root, "node"), job="j", max_seconds=0.01)
    for _ in range(500):  # bounded: 5 s at most
        if not held(store):
            break
        await asyncio.sleep(0.01)
    assert held(store) == {}
    await jobs.close()


async def test_a_volume_that_refuses_the_lease_is_a_lease_refused(
    store: layout.Store,
) -> None:
    if os.geteuid() == 0:
        # Root writes through modes: make the lease folder a file instead.
        folder = inuse.folder(store)
        if folder.exists():
            folder.rmdir()
        folder.write_text("not a folder")
    else:
        os.chmod(store.meta, 0o500)
    jobs = leases.Leases()
    with pytest.raises(leases.LeaseRefused, match="cannot lease the entries to the job"):
        await jobs.lease(store, plan(store.root, "node"), job="j", max_seconds=600)
    await jobs.close()
