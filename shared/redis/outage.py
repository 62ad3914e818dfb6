"""Whether this process can use Redis: every retry loop reports here, readiness reads it, and its
log lines are the only ones an outage produces.

A loop calls `failed(source, exc)` for each try that met one of `TRANSIENT_REDIS_ERRORS` and
`recovered(source)` after each try that worked. The outage starts with the first failure (one
warning), is logged as an error once when it has lasted `error_after_s`, and ends when no source
has failed for `settle_s` (one info line with its duration): a call that was already waiting when
Redis came back and times out just after belongs to the same outage. Retries in between log
nothing, however many loops retry how often.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from shared.core.errors import TRANSIENT_REDIS_ERRORS

log = logging.getLogger("inferq.redis")

ERROR_AFTER_S = 30.0
SETTLE_S = 1.0
PROBE_TIMEOUT_S = 2.0


class RedisOutage:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        error_after_s: float = ERROR_AFTER_S,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.clock = clock
        self.error_after_s = error_after_s
        self.settle_s = settle_s
        self._failing: dict[str, str] = {}  # source -> its last error
        self.since: float | None = None  # clock() when the current outage began; None: no outage
        self._cleared: float | None = None  # clock() when the last failing source recovered
        self.last_error = ""
        self._escalated = False

    @property
    def ongoing(self) -> bool:
        """Some loop cannot use Redis now (readiness)."""
        return bool(self._failing)

    @property
    def open(self) -> bool:
        """An outage began and its end is not yet logged (it may be settling)."""
        return self.since is not None

    def seconds(self) -> float:
        """How long the current outage has lasted (0 when there is none)."""
        return 0.0 if self.since is None else self.clock() - self.since

    def failed(self, source: str, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._failing[source] = self.last_error
        self._cleared = None
        if self.since is None:
            self.since = self.clock()
            self._escalated = False
            log.warning("Redis unavailable (%s, seen by %s); retrying with backoff", self.last_error, source)
        elif not self._escalated and self.seconds() >= self.error_after_s:
            self._escalated = True
            log.error(
                "Redis unavailable for %.0fs (%s); failing: %s",
                self.seconds(),
                self.last_error,
                ", ".join(sorted(self._failing)),
            )

    def recovered(self, source: str) -> None:
        if self.since is None:
            return
        self._failing.pop(source, None)
        if self._failing:
            return
        now = self.clock()
        if self._cleared is None:
            self._cleared = now
        if now - self._cleared >= self.settle_s:
            log.info("Redis available again after %.1fs of outage", self._cleared - self.since)
            self.since = self._cleared = None

    def describe(self) -> str:
        """For readiness: how long, what failed last, and which loops are still failing."""
        return f"redis unavailable for {self.seconds():.0f}s ({', '.join(sorted(self._failing))}): {self.last_error}"


# One per process: every loop of a service reports to the same outage.
OUTAGE = RedisOutage()


async def probe_writes(r: aioredis.Redis, key: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise what Redis raises if it does not accept a small write within `timeout_s` (a reply of
    OOM, READONLY, MISCONF, BUSY..., or none at all); a PING answers in most of those states."""
    async with asyncio.timeout(timeout_s):
        await r.set(key, b"1", px=10_000)


async def watch_recovery(r: aioredis.Redis, key: str, source: str, every_s: float = 1.0) -> None:
    """For failures met by requests rather than by a retry loop (ingest): while an outage is open,
    probe writes every `every_s` and report each result, so it ends once writes work again.
    Runs until cancelled."""
    while True:
        await asyncio.sleep(every_s)
        if not OUTAGE.open:
            continue
        try:
            await probe_writes(r, key)
        except TRANSIENT_REDIS_ERRORS as exc:
            OUTAGE.failed(source, exc)
        else:
            OUTAGE.recovered(source)
