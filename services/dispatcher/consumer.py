"""The read loop shared by the router, the collector and the webhook fan-out: new entries in
batches, plus entries that a dispatcher which died read but never acknowledged (taken over as soon
as its heartbeat is gone, see shared/lanes/liveness.py)."""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from shared.core.backoff import Backoff
from shared.core.errors import TRANSIENT_REDIS_ERRORS
from shared.core.tasks import cancel_and_wait
from shared.lanes.liveness import Liveness, TakeoverClock
from shared.redis.outage import OUTAGE
from shared.redis.streams import (
    Entry,
    claim_idle,
    consumer_name,
    delivery_counts,
    ensure_group,
    read_new,
    read_own_pending,
    trim_acknowledged,
)

log = logging.getLogger("inferq.dispatcher")


class BatchConsumer:
    role = "consumer"

    def __init__(
        self,
        r: aioredis.Redis,
        stream: str,
        group: str,
        *,
        count: int,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        trim_every_s: float = 1.0,
        liveness: Liveness | None = None,
    ) -> None:
        self.r = r
        self.stream = stream
        self.group = group
        self.count = count
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.trim_every_s = trim_every_s
        self.consumer = consumer_name(self.role)
        # None (a consumer tested alone): no heartbeat, and no takeover of dead peers' entries
        self.liveness = liveness

    async def handle(self, entries: list[Entry]) -> None:
        raise NotImplementedError

    async def handle_poison(self, entries: list[Entry], deliveries: dict[bytes, int]) -> None:
        """Entries delivered more than `max_deliveries` times (consumers keep dying on them)."""
        raise NotImplementedError

    async def prepare(self) -> None:
        """Runs once before the loop (create the groups this consumer writes to)."""

    async def tick(self) -> None:
        """Runs after every read, with or without entries."""

    def idle_block_ms(self) -> int | None:
        """How long the next read may block; None reads without blocking."""
        return self.block_ms

    async def _handle_reclaimed(self, stale: list[Entry], deliveries: dict[bytes, int] | None = None) -> None:
        if deliveries is None:
            deliveries = await delivery_counts(self.r, self.stream, self.group, self.consumer, [e[0] for e in stale])
        poison = [e for e in stale if deliveries.get(e[0], 1) > self.max_deliveries]
        if poison:
            await self.handle_poison(poison, deliveries)
        rest = [e for e in stale if deliveries.get(e[0], 1) <= self.max_deliveries]
        if rest:
            await self.handle(rest)

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until `stop` is set. Each batch is handled atomically with its XACK, so stopping
        between batches (or crashing anywhere) leaves nothing half done."""
        backoff = Backoff(0.1, 5.0)
        while not stop.is_set():  # Redis may be briefly unable at start too
            try:
                await ensure_group(self.r, self.stream, self.group)
                await self.prepare()
                break
            except TRANSIENT_REDIS_ERRORS as exc:
                OUTAGE.failed(self.role, exc)
                await sleep_unless(stop, backoff.next())
        beating = None
        if self.liveness:  # alive while this task runs; its key goes when the task ends
            beating = self.liveness.heartbeat(self.consumer).keep_while_current_task()
        try:
            await self._consume(stop, backoff)
        finally:
            if beating is not None:  # the key is deleted before the caller can close the connection
                await cancel_and_wait(beating)

    async def _consume(self, stop: asyncio.Event, backoff: Backoff) -> None:
        """`run`'s loop, while the consumer's heartbeat beats."""
        next_claim = next_trim = 0.0
        takeover = TakeoverClock()
        # After a failure, this consumer's own pending entries first (from this id): a batch whose
        # handling failed, or a read whose reply was lost, is handled again rather than left for a
        # reclaim; handling is atomic with the XACK, so nothing is done twice.
        own_from: bytes | str | None = None
        while not stop.is_set():
            try:
                if self.liveness and takeover.due():
                    taken, deliveries = await self.liveness.take_over(
                        self.stream, self.group, self.consumer, self.count
                    )
                    takeover.checked(len(taken), self.count)
                    if taken:
                        await self._handle_reclaimed(taken, deliveries)
                if time.monotonic() >= next_claim:  # backstop: entries a live consumer lost track of
                    next_claim = time.monotonic() + self.claim_idle_ms / 3000
                    stale = await claim_idle(
                        self.r, self.stream, self.group, self.consumer, self.claim_idle_ms, self.count
                    )
                    if stale:
                        log.warning(
                            "%s reclaimed %d unacknowledged entries from %s", self.role, len(stale), self.stream
                        )
                        await self._handle_reclaimed(stale)
                if own_from is not None:
                    entries, own_from = await read_own_pending(
                        self.r, self.stream, self.group, self.consumer, self.count, own_from
                    )
                else:
                    entries = await read_new(
                        self.r, self.stream, self.group, self.consumer, self.count, self.idle_block_ms()
                    )
                if entries:
                    await self.handle(entries)
                await self.tick()
                if time.monotonic() >= next_trim:
                    # keep the stream's length near its backlog, so memory stays flat under load
                    next_trim = time.monotonic() + self.trim_every_s
                    await trim_acknowledged(self.r, self.stream)
                backoff.reset()
                OUTAGE.recovered(self.role)
            except TRANSIENT_REDIS_ERRORS as exc:  # logged once per outage, by shared/redis/outage.py
                OUTAGE.failed(self.role, exc)
                own_from = "0"
                await sleep_unless(stop, backoff.next())


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, or less if `stop` is set meanwhile; whether it was."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
    return stop.is_set()
