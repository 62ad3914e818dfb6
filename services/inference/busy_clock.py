"""How much of a worker's busy time each request is charged.

At every moment the worker has n >= 1 requests in flight, each of them is charged 1/n of that
moment. The clock keeps one running integral, S(t) = the sum of dt / n(t) over the busy time so
far ("seconds per in-flight request"); a request that ran from t0 to t1 is charged S(t1) - S(t0).
Each start and end costs O(1), whatever the number in flight, and the charges of all requests add
up to the time the worker had at least one request in flight: idle time is charged to nobody.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class BusyClock:
    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._last = now()
        self._integral = 0.0  # S(last): seconds per in-flight request, since the clock began
        self._busy = 0.0  # seconds with at least one request in flight
        self._started: dict[Hashable, float] = {}  # request -> S when it started

    def _advance(self) -> None:
        t = self._now()
        n = len(self._started)
        if n:
            self._integral += (t - self._last) / n
            self._busy += t - self._last
        self._last = t

    def start(self, key: Hashable) -> None:
        """`key` is in flight from now (a key already in flight keeps its start)."""
        self._advance()
        self._started.setdefault(key, self._integral)

    def stop(self, key: Hashable) -> float:
        """`key` is no longer in flight: the seconds it is charged (0 for a key not in flight)."""
        self._advance()
        began = self._started.pop(key, None)
        return 0.0 if began is None else self._integral - began

    @property
    def in_flight(self) -> int:
        return len(self._started)

    @property
    def busy_s(self) -> float:
        """Seconds so far during which at least one request was in flight."""
        self._advance()
        return self._busy


def micros(seconds: float) -> int:
    """Seconds as whole microseconds (what results carry, so sums are exact)."""
    return max(0, round(seconds * 1_000_000))
