"""Ensure a resolved plan is installed, and say what to export.

Policy: this takes a plan as data (from the catalog's resolver) and makes every step's
entry present, in the plan's order; it does not resolve anything itself, so the store
never depends on the catalog. The environment it returns is absolute for this store's
mount point (receipts keep it relative, for other mount points).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from agent.store import installing, layout, locks


@dataclass
class Ensured:
    """What was ensured and what to export."""

    installed: list[installing.Installed] = field(default_factory=list)
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
            "path": self.path,
            "vars": self.vars,
        }


def ensure_plan(
    store: layout.Store,
    plan: dict[str, Any],
    *,
    lock_backend: locks.LockBackend | None = None,
    options: installing.Options | None = None,
) -> Ensured:
    """Install every step of ``plan`` that is missing; return the environment to export."""
    store.open()
    backend = lock_backend or locks.PosixLocks()
    result = Ensured()
    for step in plan["features"]:
        step = {**step, "platform": plan["platform"]}
        done = installing.install(store, step, lock_backend=backend, options=options)
        result.installed.append(done)
        for rel in done.receipt.env.get("path", []):
            result.path.append(os.path.normpath(os.path.join(done.entry.path, rel)))
        for name, value in done.receipt.env.get("vars", {}).items():
            result.vars[name] = value.replace(installing.PREFIX_VAR, str(done.entry.path))
    return result
