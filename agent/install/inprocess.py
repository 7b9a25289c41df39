"""Installs in threads of this process: the pool of ``runner-agent ensure --local``, of
tests and of benches.

Policy: where no event loop needs guarding from the GIL, spawning a worker would cost
more than the install it runs; this module stays light (no multiprocessing), so a
process that ensures one plan and exits pays for nothing else.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.install import protocol
from agent.kits import progress
from agent.platform import plans as wire
from agent.store import entries, layout, locks


class InProcess:
    """Installs in threads of this process: the pool of ``runner-agent ensure --local``
    and of tests and benches, where no event loop needs guarding and spawning a worker
    would cost more than the install it runs."""

    def __init__(self, *, backend: locks.LockBackend | None = None) -> None:
        """``backend`` replaces the one each install's lock spec names (a caller that
        tuned its own, as tests do)."""
        self._backend = backend

    async def install(
        self,
        root: str,
        step: wire.ToolStep,
        *,
        lock: tuple[str, float],
        options: protocol.Options,
        listener: progress.Listener,
    ) -> entries.Installed:
        """Install ``step`` into the store at ``root`` in a thread; progress to
        ``listener`` (called from that thread)."""
        backend = self._backend or locks.backend(lock[0], lease_ttl=lock[1])

        def run() -> entries.Installed:
            with progress.listening(listener):
                return protocol.install(
                    layout.Store(Path(root)), step, lock_backend=backend, options=options
                )

        return await asyncio.to_thread(run)

    def close(self) -> None:
        """Nothing to stop: threads end with their installs."""
