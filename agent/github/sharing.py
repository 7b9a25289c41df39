"""One request per key at a time: concurrent asks for the same thing share its answer.

A matrix's legs start together and ask GitHub the same questions (the team config at one
commit, one run's job list); the first ask sends the request, the others await its
result or its error. A cancelled first ask cancels the shared one; the others see that.

Agents on other pods that share the store ask the same questions: :class:`Notes` is how
the answers are left for them (``agent.store.notes`` implements it; the daemon wires it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Shared(Generic[K, V]):
    """The requests in flight, by key."""

    def __init__(self) -> None:
        self._pending: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, make: Callable[[], Awaitable[V]]) -> V:
        """``make()``'s result, or the one already being made for ``key``."""
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            value = await make()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a lone ask must not leave it unread
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(value)
        return value


class Notes(Protocol):
    """Small answers left on the shared store for the other agents (see the module)."""

    async def read(self, kind: str, key: str, *, max_age: float) -> bytes | None:
        """The note, if one at most ``max_age`` seconds old is there."""
        ...

    async def write(self, kind: str, key: str, data: bytes) -> None:
        """Leave a note (never fails: a note only saves requests)."""
        ...

    async def forget(self, kind: str, key: str) -> None:
        """Remove a note, if it is there."""
        ...

    async def read_aged(self, kind: str, key: str, *, max_age: float) -> tuple[bytes, float] | None:
        """The note and its age in seconds, if one at most ``max_age`` old is there."""
        ...

    def exclusive(
        self,
        kind: str,
        key: str,
        *,
        wait: float,
        ready: Callable[[], Awaitable[bool]] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[bool]:
        """One agent at a time for ``key``, waiting up to ``wait`` (or until ``ready()``
        says the answer is there); says if it is held."""
        ...
