"""Exponential backoff: how long to wait before the next try of something that keeps failing.

Every retry loop uses it, so "first delay, doubling, capped" means the same thing everywhere and a
loop that has recovered starts again from the first delay.
"""

from __future__ import annotations

import random


def exponential_delay(attempt: int, first_s: float, cap_s: float, *, jitter: bool = False) -> float:
    """The wait after failed try number `attempt` (1 = the first failure): `first_s`, doubling,
    at most `cap_s`. With `jitter` it is cut to a random 50-100 % of that, so many clients that
    failed together do not all come back at the same moment."""
    delay = min(cap_s, first_s * 2.0 ** min(max(0, attempt - 1), 64))  # a long outage must not overflow
    return delay * (0.5 + random.random() / 2) if jitter else delay


class Backoff:
    """The delays of one retry loop: `next()` after each failure, `reset()` after a success."""

    def __init__(self, first_s: float, cap_s: float, *, jitter: bool = False) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.jitter = jitter
        self.failures = 0

    def next(self) -> float:
        """Count a failure; the delay to wait before trying again."""
        self.failures += 1
        return exponential_delay(self.failures, self.first_s, self.cap_s, jitter=self.jitter)

    def reset(self) -> None:
        self.failures = 0
