"""Which stream consumers are alive, and taking over the work of those that are not.

Every consumer (router, collector, webhook fan-out, inference worker) keeps a heartbeat key
(`Keys.heartbeat`) alive with a short TTL. A consumer is dead when its key is gone and nothing has
been delivered to it for a TTL either: the second condition covers a process that started before
heartbeats existed, or that has read before its first beat. Every TAKEOVER_CHECK_S, each consumer
looks at the others in its group (one XINFO CONSUMERS per stream, one pipelined EXISTS), claims the
unacknowledged entries of dead ones (atomically with a check that their key is still gone, so a
live consumer keeps its entries however slow it is) and removes dead ones holding nothing from the
group. Worst case from a death to its entries being claimed: TTL + TAKEOVER_CHECK_S.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from shared.core.backoff import Backoff
from shared.core.errors import TRANSIENT_REDIS_ERRORS
from shared.lanes.takeover import ForgetConsumer, TakeOver
from shared.redis.keys import Keys
from shared.redis.outage import OUTAGE
from shared.redis.streams import Entry

log = logging.getLogger("inferq.liveness")
TAKEOVER_CHECK_S = 1.0
# Entries a dead consumer received less than this long ago are left for the next check: a consumer
# that just resumed and read again is not robbed of what it read before its heartbeat is back.
TAKEOVER_MIN_IDLE_MS = 1000


class ConsumerState(msgspec.Struct, frozen=True):
    """One consumer of a group, as a takeover check sees it."""

    name: str
    pending: int  # entries delivered to it and not acknowledged
    idle_ms: int  # since something was last delivered to it
    alive: bool


class Heartbeat:
    """Keeps one consumer's heartbeat key alive. Renewed with PEXPIRE, and SET only when missing:
    a Redis at `maxmemory` refuses SET but not PEXPIRE, so live consumers stay alive through it."""

    def __init__(self, r: aioredis.Redis, key: str, ttl_s: float) -> None:
        self.r = r
        self.key = key
        self.ttl_ms = int(ttl_s * 1000)
        self.every_s = ttl_s / 4
        # Set when a beat finds the key gone after an earlier beat: this consumer was presumed dead
        # (paused past the TTL, cut off from Redis) and peers may have taken over its entries.
        self.revived = asyncio.Event()
        self._announced = False

    async def beat(self) -> None:
        if not await self.r.pexpire(self.key, self.ttl_ms):
            await self.r.set(self.key, b"1", px=self.ttl_ms)
            if self._announced:
                log.warning("heartbeat %s had expired: announced again", self.key)
                self.revived.set()
        self._announced = True

    def keep_while_current_task(self) -> asyncio.Task:
        """Beat until the task calling this ends, however it ends (returns, fails, is cancelled)."""
        beating = asyncio.create_task(self.run(), name=f"heartbeat {self.key}")
        owner = asyncio.current_task()
        assert owner is not None  # called from a consumer's task
        owner.add_done_callback(lambda _: beating.cancel())
        return beating

    async def run(self) -> None:
        """Beat every quarter TTL until cancelled, then delete the key (see `end`). Redis errors are
        logged and retried, never raised. After a pause (SIGSTOP) the overdue beat runs first thing:
        a resumed consumer announces itself again at once."""
        try:
            await self._beat_forever()
        except asyncio.CancelledError:
            await self.end()
            raise

    async def _beat_forever(self) -> None:
        backoff = Backoff(0.1, self.every_s)
        failing = False
        while True:
            try:
                await self.beat()
            except (RedisError, OSError) as exc:
                if isinstance(exc, TRANSIENT_REDIS_ERRORS):  # logged once per outage, by shared/redis/outage.py
                    OUTAGE.failed("heartbeat", exc)
                else:
                    if not failing:
                        log.warning("could not renew heartbeat %s (%s); retrying", self.key, exc)
                    failing = True
                await asyncio.sleep(backoff.next())
                continue
            OUTAGE.recovered("heartbeat")
            if failing:
                log.info("heartbeat %s renewed again", self.key)
            failing = False
            backoff.reset()
            await asyncio.sleep(self.every_s)

    async def end(self) -> None:
        """Delete the key once the consumer has stopped, so whatever it left unacknowledged is taken
        over at once instead of after the TTL."""
        try:
            async with asyncio.timeout(2.0):
                await self.r.delete(self.key)
        except (RedisError, OSError, TimeoutError) as exc:  # it expires on its own
            log.warning("could not delete heartbeat %s: %s", self.key, exc)


class Liveness:
    """Heartbeats and takeover checks for one deployment (key prefix) and heartbeat TTL."""

    def __init__(self, r: aioredis.Redis, keys: Keys, ttl_s: float = 10.0) -> None:
        self.r = r
        self.keys = keys
        self.ttl_s = ttl_s
        self._take = TakeOver(r)
        self._forget = ForgetConsumer(r)

    def heartbeat(self, consumer: str) -> Heartbeat:
        return Heartbeat(self.r, self.keys.heartbeat(consumer), self.ttl_s)

    async def consumers(self, stream: str, group: str) -> list[ConsumerState]:
        """The group's consumers on `stream` (none for a missing stream or group)."""
        try:
            rows = await self.r.xinfo_consumers(stream, group)
        except ResponseError as exc:  # no such stream or group
            if isinstance(exc, TRANSIENT_REDIS_ERRORS):
                raise
            return []
        if not rows:
            return []
        names = [_s(row["name"]) for row in rows]
        async with self.r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(self.keys.heartbeat(name))
            beating = await pipe.execute()
        silent_ms = self.ttl_s * 1000
        return [
            ConsumerState(
                name=name,
                pending=int(row["pending"]),
                idle_ms=int(row["idle"]),
                alive=bool(beats) or int(row["idle"]) < silent_ms,
            )
            for name, row, beats in zip(names, rows, beating)
        ]

    async def any_alive(self, streams: list[str], group: str) -> bool:
        for stream in streams:
            if any(c.alive for c in await self.consumers(stream, group)):
                return True
        return False

    async def take_over(self, stream: str, group: str, taker: str, count: int) -> tuple[list[Entry], dict[bytes, int]]:
        """Claim for `taker` up to `count` entries held by dead consumers of the group, with their
        delivery counts (so poison detection still works); remove dead consumers holding nothing."""
        entries: list[Entry] = []
        deliveries: dict[bytes, int] = {}
        for c in await self.consumers(stream, group):
            if c.alive or c.name == taker:
                continue
            heartbeat = self.keys.heartbeat(c.name)
            if c.pending == 0:
                if await self._forget(stream=stream, heartbeat=heartbeat, group=group, consumer=c.name):
                    log.info("removed dead consumer %s from %s/%s", c.name, stream, group)
                continue
            if len(entries) >= count:
                continue
            claimed = await self._take(
                stream=stream,
                heartbeat=heartbeat,
                group=group,
                dead=c.name,
                taker=taker,
                min_idle_ms=TAKEOVER_MIN_IDLE_MS,
                count=count - len(entries),
            )
            if claimed:
                log.warning(
                    "took over %d entries of %s from %s (no heartbeat, silent for %.0fs)",
                    len(claimed),
                    stream,
                    c.name,
                    c.idle_ms / 1000,
                )
            for entry_id, fields, times in claimed:
                entries.append((entry_id, fields))
                deliveries[entry_id] = times
        return entries, deliveries


class TakeoverClock:
    """When a consumer's next takeover check is due: every TAKEOVER_CHECK_S, or at once again
    after a check that filled all the room it had (there may be more to take)."""

    def __init__(self) -> None:
        self._next = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def checked(self, taken: int, room: int) -> None:
        self._next = 0.0 if taken >= room > 0 else time.monotonic() + TAKEOVER_CHECK_S


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
