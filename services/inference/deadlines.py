"""Per-attempt time limits of the requests in flight, enforced by one watchdog task.

A timer context around each attempt (`asyncio.timeout`) costs a timer handle and its bookkeeping
per request: about a tenth of a busy worker's CPU at thousands of requests per second. One task
that wakes a few times per limit and cancels what is overdue costs nothing per request; a limit
is then kept to within a fifth of itself (at most 0.5 s late)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable


class Deadlines:
    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.tick_s = min(0.5, limit_s / 5)
        self._due: dict[Hashable, tuple[float, asyncio.Task]] = {}
        self._expired: set[Hashable] = set()

    def start(self, key: Hashable, task: asyncio.Task) -> None:
        """An attempt of `key` begins in `task` (the one running it: passed, because looking it up
        costs more than the rest of this): it is cancelled once over the limit."""
        self._due[key] = (time.monotonic() + self.limit_s, task)

    def end(self, key: Hashable) -> None:
        self._due.pop(key, None)

    def expired(self, key: Hashable) -> bool:
        """Whether the cancellation `key`'s task just received came from its limit (asked once)."""
        if key in self._expired:
            self._expired.discard(key)
            return True
        return False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            for key, (due, task) in list(self._due.items()):
                if now >= due:
                    del self._due[key]
                    self._expired.add(key)
                    task.cancel()
