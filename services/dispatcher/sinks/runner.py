"""Delivers the events stream to one sink: at least once, in stream order, one dispatcher at a
time (the sink's lease), the cursor moved only after the sink acknowledged a batch.

Each step reads up to `batch_size` events after the cursor, keeps those the sink's filter wants,
hands them over and retries what failed (only that: events already acknowledged are not sent
again), backing off and honouring Retry-After, until every one is delivered or refused as
malformed; then moves the cursor past the batch. A dispatcher killed in between leaves the cursor
where it was: the next holder sends that batch again, the CloudEvent `id` being the receiver's
dedupe key. A sink that is down holds only its own cursor back: each sink runs on its own, apart
from the pipeline and from webhooks, which never wait for it."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import redis.asyncio as aioredis

from services.dispatcher.consumer import sleep_unless
from services.dispatcher.scaling.lead import Lead
from services.dispatcher.sinks.cursor import Batch, SinkCursor
from services.dispatcher.sinks.events import Outcome, SinkEvent, error_text
from services.dispatcher.sinks.job_filter import JobFilter
from shared.catalog.sinks import SinkConfig
from shared.core.backoff import Backoff
from shared.core.errors import TRANSIENT_REDIS_ERRORS
from shared.core.tasks import cancel_and_wait
from shared.redis import scripts
from shared.redis.keys import Keys
from shared.redis.outage import OUTAGE
from shared.redis.streams import consumer_name

log = logging.getLogger("inferq.sinks")
LEASE_MS = 5_000
WAIT_MS = 1_000  # how long a caught-up sink waits for the next event in one read
PARSE_SLICE = 100  # events parsed between two yields to the event loop


class SinkClient(Protocol):
    async def start(self) -> None: ...
    async def send(self, events: list[SinkEvent]) -> list[Outcome]: ...
    async def close(self) -> None: ...


class SinkRunner:
    def __init__(
        self, r: aioredis.Redis, keys: Keys, name: str, cfg: SinkConfig, client: SinkClient, *, lease_ms: int = LEASE_MS
    ) -> None:
        self.r, self.keys, self.name, self.cfg, self.client = r, keys, name, cfg, client
        self.holder = consumer_name(f"sink-{name}")
        self.lease_ms = lease_ms
        self.cursor = SinkCursor(r, keys, name, self.holder, start=cfg.start)
        self.filter = JobFilter(r, keys, cfg)
        self._lead = Lead(r)
        self._release = scripts.register(r, __name__, "release")
        self._held_until = 0.0  # monotonic: the lease is ours until then, as far as this process knows
        self.failing = False
        self.delivered = self.rejected = self.lost = 0  # by this process, for its log and metrics
        self._types = frozenset(cfg.types)

    @property
    def holding(self) -> bool:
        """Whether this dispatcher may deliver: its last renewal, counted from when it was sent,
        has not run out (a renewal that hangs does not extend it)."""
        return time.monotonic() < self._held_until

    async def run(self, stop: asyncio.Event) -> None:
        if not await self._redis_has_stream_counters(stop):
            return
        keeper = asyncio.create_task(self._keep_lease(stop), name=f"sink-{self.name}-lease")
        backoff = Backoff(0.1, 5.0)
        try:
            await self.client.start()
            while not stop.is_set():
                try:
                    if not self.holding:
                        await sleep_unless(stop, 0.2)
                        continue
                    await self._step(stop)
                    backoff.reset()
                    OUTAGE.recovered(f"sink {self.name}")
                except TRANSIENT_REDIS_ERRORS as exc:
                    OUTAGE.failed(f"sink {self.name}", exc)
                    await sleep_unless(stop, backoff.next())
        finally:
            await cancel_and_wait(keeper)
            await self._give_up_lease()
            await self.client.close()

    async def _redis_has_stream_counters(self, stop: asyncio.Event) -> bool:
        """Lost and lag are counted from XINFO STREAM's entries-added, which came with Redis 7.0."""
        while not stop.is_set():
            try:
                version = str((await self.r.info("server")).get("redis_version", "0"))
                break
            except TRANSIENT_REDIS_ERRORS as exc:
                OUTAGE.failed(f"sink {self.name}", exc)
                await sleep_unless(stop, 1.0)
        else:
            return False
        if int(version.split(".")[0]) >= 7:
            return True
        log.error("sink %s: not delivering: event sinks need Redis 7.0 or newer (this is %s)", self.name, version)
        self.failing = True
        return False

    async def _keep_lease(self, stop: asyncio.Event) -> None:
        """Take the lease when free, renew it while held. The lease counts as ours only until
        `lease_ms` after the renewal was sent, less a margin: a renewal that hangs (a partition)
        lets it run out here before another dispatcher can take it there."""
        margin_s = self.lease_ms / 5000
        while not stop.is_set():
            sent = time.monotonic()
            try:
                ours = await self._lead(
                    lease=self.keys.sink_lease(self.name), holder=self.holder, lease_ms=self.lease_ms
                )
            except TRANSIENT_REDIS_ERRORS:
                ours = False
            except Exception:  # never let the keeper die quietly: the sink would stop with no word
                log.exception("sink %s: renewing the lease failed", self.name)
                ours = False
            if ours and not self.holding:
                log.info("sink %s: delivering from this dispatcher", self.name, extra={"holder": self.holder})
            self._held_until = sent + self.lease_ms / 1000 - margin_s if ours else 0.0
            await sleep_unless(stop, margin_s)

    async def _give_up_lease(self) -> None:
        if not self.holding:
            return
        self._held_until = 0.0
        try:
            await self._release(keys=[self.keys.sink_lease(self.name)], args=[self.holder])
        except TRANSIENT_REDIS_ERRORS:
            pass  # it expires on its own

    async def _step(self, stop: asyncio.Event) -> None:
        batch = await self.cursor.read(self.cfg.batch_size)
        if batch is None:
            self._held_until = 0.0
            return
        if batch.reset:
            log.error(
                "sink %s: the events stream was deleted or restored to an older state; the cursor starts "
                "again from its oldest event (events already delivered may come again, with the same ids)",
                self.name,
            )
        if not batch.entries:
            await self.r.xread({self.keys.events_stream: batch.cursor}, count=1, block=WAIT_MS)
            return
        if batch.lost:
            log.error(
                "sink %s: %d events were trimmed from the events stream before this sink read them; "
                "they are lost for this sink (raise INFERQ_EVENTS_MAXLEN or fix the sink's outage)",
                self.name,
                batch.lost,
            )
        handed = await self._hand_over(await self._wanted(batch), stop)
        if handed is None:  # stopping, or the lease moved: whoever holds the sink reads the batch again
            return
        delivered, rejected = handed
        if await self.cursor.advance(batch, delivered=delivered, rejected=rejected):
            self.delivered += delivered
            self.rejected += rejected
            self.lost += batch.lost
        else:
            log.warning("sink %s: the cursor moved while this dispatcher delivered; reading again", self.name)

    async def _wanted(self, batch: Batch) -> list[SinkEvent]:
        events = [e for e in map(SinkEvent.of, batch.entries) if e.type in self._types]
        jobs = await self.filter.wanted([e.job_id for e in events])
        return [e for e in events if e.job_id in jobs]

    async def _send(self, events: list[SinkEvent]) -> list[Outcome]:
        """The client's outcomes; anything it raises is a failure of the whole send, retried, so a
        surprise in a client library never takes the dispatcher (and the pipeline) down."""
        try:
            return await self.client.send(events)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("sink %s: sending failed unexpectedly", self.name)
            return [Outcome("failed", error_text(exc))] * len(events)

    async def _hand_over(self, events: list[SinkEvent], stop: asyncio.Event) -> tuple[int, int] | None:
        """(delivered, rejected) once every event is one or the other; None if stopped first."""
        delivered = rejected = 0
        pending: list[SinkEvent] = []
        for n, event in enumerate(events):
            try:
                event.cloudevent  # noqa: B018 - parsed here once: a document that is no CloudEvent is refused alone
                pending.append(event)
            except Exception as exc:  # the SDK raises several kinds for a malformed document
                log.error("sink %s: event %s is not a valid CloudEvent, skipped: %s", self.name, event.entry_id, exc)
                rejected += 1
            if n % PARSE_SLICE == PARSE_SLICE - 1:
                await asyncio.sleep(0)  # the dispatcher's other loops run between slices
        backoff = Backoff(self.cfg.retry_initial_s, self.cfg.retry_max_s, jitter=True)
        while pending:
            outcomes = await self._send(pending)
            failed: list[SinkEvent] = []
            first: Outcome | None = None
            retry_after = 0.0
            for event, outcome in zip(pending, outcomes, strict=True):
                if outcome.kind == "delivered":
                    delivered += 1
                elif outcome.kind == "rejected":
                    rejected += 1
                    log.error(
                        "sink %s: the receiver refused event %s: %s; skipped", self.name, event.id, outcome.detail
                    )
                else:
                    failed.append(event)
                    first = first or outcome
                    retry_after = max(retry_after, outcome.retry_after_s)
            if not failed:
                break
            assert first is not None
            delay = max(backoff.next(), retry_after)
            if not self.failing:
                log.warning("sink %s: cannot deliver (%s); retrying, backing off", self.name, first.detail)
                self.failing = True
            await self.cursor.failed(first.detail)
            pending = failed
            if await sleep_unless(stop, delay) or not self.holding:
                return None
        if self.failing:
            log.info("sink %s: delivering again", self.name)
            self.failing = False
        return delivered, rejected
