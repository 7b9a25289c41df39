"""Restart pacing: exponential backoff with jitter, and the start-rate limit.

Policy (as systemd and Kubernetes do it):
- the n-th consecutive fault waits ``initial x multiplier^(n-1)``, capped at ``max``, less
  a random fraction up to ``jitter`` (never more than the cap, so the configured maximum
  is a true bound); a stretch of healthy running of ``reset_after_seconds`` starts the
  sequence over;
- more than ``start_limit_burst`` starts within ``start_limit_window_seconds`` and the
  service is ``failed``: it stays down until an operator starts it or its configuration
  changes, which also clears the history;
- every delay planned is recorded (base and jittered), so tests and operators read the
  sequence from the supervisor's state instead of timing it.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.config import services as specs
from agent.kits import backoff


@dataclass(frozen=True)
class Planned:
    """One restart delay the supervisor scheduled."""

    attempt: int
    base_seconds: float
    delay_seconds: float
    at: float
    """Unix time it was planned."""


class Backoff:
    """Delays between restarts of one service."""

    def __init__(
        self, policy: specs.RestartPolicy, *, rng: Callable[[], float] = random.random
    ) -> None:
        self.policy = policy
        self.history: deque[Planned] = deque(maxlen=50)
        self._sequence = backoff.Backoff(
            initial=policy.backoff_initial_seconds,
            maximum=policy.backoff_max_seconds,
            multiplier=policy.backoff_multiplier,
            jitter=policy.jitter,
            rng=rng,
        )

    @property
    def attempts(self) -> int:
        """Consecutive faults since the last reset."""
        return self._sequence.attempts

    def next(self) -> Planned:
        """Plan the delay before the next restart and record it."""
        # The policy may have been replaced by a reload since the last fault.
        p, sequence = self.policy, self._sequence
        sequence.initial, sequence.maximum = p.backoff_initial_seconds, p.backoff_max_seconds
        sequence.multiplier, sequence.jitter = p.backoff_multiplier, p.jitter
        delay = sequence.next()
        planned = Planned(self.attempts, delay.base, delay.seconds, time.time())
        self.history.append(planned)
        return planned

    def reset(self) -> None:
        """Start the sequence over (after healthy running, or an operator's start)."""
        self._sequence.reset()


class StartLimit:
    """Starts within a sliding window (systemd's StartLimitBurst/IntervalSec)."""

    def __init__(self, policy: specs.RestartPolicy) -> None:
        self.policy = policy
        self.starts: deque[float] = deque()

    def allows(self, now: float) -> bool:
        """Whether one more start at ``now`` (monotonic) stays within the limit."""
        window = self.policy.start_limit_window_seconds
        while self.starts and now - self.starts[0] > window:
            self.starts.popleft()
        return len(self.starts) < self.policy.start_limit_burst

    def record(self, now: float) -> None:
        """Count a start at ``now``."""
        self.starts.append(now)

    def clear(self) -> None:
        """Forget past starts (an operator's start, a config change)."""
        self.starts.clear()
