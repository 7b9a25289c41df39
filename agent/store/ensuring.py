"""Ensure a resolved plan is installed, and say what to export.

Policy: this takes a plan as data (from the catalog's resolver) and makes every step's
entry present, round by round: steps of one round do not depend on each other and
install concurrently, up to ``parallelism`` at once; a round starts when the one before
it is complete, and the first failure stops the plan after the steps already running
finish. It resolves nothing itself, so the store never depends on the catalog.
``system`` steps are not the store's: they go to the ``system`` callable the caller
gives (the host executor in host mode), and without one they are an error. The
environment it returns is absolute for this store's mount point (receipts keep it
relative, for other mount points).
"""

from __future__ import annotations

import contextvars
import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent.store import installing, layout, locks, progress

SystemHandler = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Ensured:
    """What was ensured and what to export."""

    installed: list[installing.Installed] = field(default_factory=list)
    system: list[dict[str, Any]] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    vars: dict[str, str] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "features": [
                {
                    "id": i.receipt.feature,
                    "version": i.receipt.version,
                    "path": str(i.entry.path),
                    "cached": i.cached,
                }
                for i in self.installed
            ],
            "system": self.system,
            "path": self.path,
            "vars": self.vars,
        }


def ensure_plan(
    store: layout.Store,
    plan: dict[str, Any],
    *,
    lock_backend: locks.LockBackend | None = None,
    options: installing.Options | None = None,
    parallelism: int = 1,
    system: SystemHandler | None = None,
) -> Ensured:
    """Install every step of ``plan`` that is missing; return the environment to export."""
    store.open()
    backend = lock_backend or locks.PosixLocks()
    result = Ensured()
    steps = [{**step, "platform": plan["platform"]} for step in plan["features"]]
    for step in steps:
        if step["method"] == "system" and system is None:
            raise layout.StoreError(
                f"{step['id']} installs OS packages, which only host mode runs; install it "
                "on the runner (runner-agent ensure on that host) or choose another method"
            )
    done: dict[int, installing.Installed | dict[str, Any]] = {}

    def one(index: int) -> None:
        step = steps[index]
        with progress.about(step["id"]):
            _one(index, step)

    def _one(index: int, step: dict[str, Any]) -> None:
        if step["method"] == "system":
            assert system is not None
            done[index] = system(step)
        else:
            done[index] = installing.install(store, step, lock_backend=backend, options=options)

    with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        for _, group in itertools.groupby(range(len(steps)), key=lambda i: steps[i].get("round")):
            # Each task runs in a copy of this context: progress listeners reach the pool.
            futures = [pool.submit(contextvars.copy_context().run, one, i) for i in group]
            for future in futures:
                future.result()  # the first failure propagates, after its round settles
    for index in range(len(steps)):
        item = done[index]
        if isinstance(item, dict):
            result.system.append(item)
            continue
        result.installed.append(item)
        for rel in item.receipt.env.get("path", []):
            result.path.append(os.path.normpath(os.path.join(item.entry.path, rel)))
        for name, value in item.receipt.env.get("vars", {}).items():
            result.vars[name] = value.replace(installing.PREFIX_VAR, str(item.entry.path))
    return result
