"""Exponential backoff: the one doubling-and-capping sequence the agent waits by.

Policy: the n-th consecutive try waits ``initial x multiplier^(n-1)``, capped at
``maximum``, less a random fraction up to ``jitter`` of it (so the cap is a true bound,
and peers that failed together do not retry in step). Standard library only: the daemon
uses it before its listeners are up. Retries of a network exchange use tenacity
instead (see :mod:`agent.install.fetch.downloads`): they classify failures, these only
wait.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NamedTuple


class Delay(NamedTuple):
    """One planned wait: the sequence's value and the wait after jitter."""

    base: float
    seconds: float


class Backoff:
    """Delays between consecutive tries of one thing."""

    def __init__(
        self,
        *,
        initial: float,
        maximum: float,
        multiplier: float = 2.0,
        jitter: float = 0.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial, self.maximum, self.multiplier, self.jitter = (
            initial,
            maximum,
            multiplier,
            jitter,
        )
        self.attempts = 0
        self._rng = rng

    def next(self) -> Delay:
        """The wait before the next try; counts one more attempt."""
        self.attempts += 1
        base = min(self.maximum, self.initial * self.multiplier ** (self.attempts - 1))
        return Delay(base, base * (1.0 - self.jitter * self._rng()))

    def reset(self) -> None:
        """Start the sequence over (the thing worked)."""
        self.attempts = 0
