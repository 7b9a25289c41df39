"""One request per key at a time: concurrent asks for the same thing share its answer.

A matrix's legs start together and ask GitHub the same questions (the team config at one
commit, one run's job list); the first ask sends the request, the others await its
result or its error. A cancelled first ask cancels the shared one; the others see that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

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
