"""Webhook attempts, each made once per due time, and at most a set number in flight per endpoint.

A due delivery is taken by a compare-and-set on its due score (several dispatchers may poll the
due set at once: one takes it, the others see it moved); the taker holds the attempt under a
token and a lease. Only the holder starts the attempt (once) and records its outcome; its record
appends to the history it read after taking, so no attempt overwrites another. A holder that
never records (its sender died) loses the attempt when the lease ends: the delivery falls due
again, its endpoint slot is freed, and the next holder records the lost attempt in the history.
The lease outlasts the attempt's timeout, so a live sender always records before it ends."""

from __future__ import annotations

import time
from typing import NamedTuple

import msgspec
import redis.asyncio as aioredis

from services.dispatcher.webhooks.attempt_scripts import FinishAttempt, StartAttempt, TakeDeliveries
from shared.redis.keys import Keys
from shared.webhooks.records import DeliveryRecord

LEASE_MARGIN_S = 60.0  # a lease is the attempt's timeout plus this (a taken attempt may wait in the job queue)
BUSY_DEFER_MS = 250  # a delivery whose endpoint is at its limit is looked at again this much later


class Attempt(NamedTuple):
    """A taken attempt: only the holder of `token` may start it and record its outcome."""

    delivery_id: str
    endpoint_id: str
    token: int


class _EndpointOf(msgspec.Struct):
    endpoint_id: str


_endpoint_of = msgspec.json.Decoder(_EndpointOf)
_encode = msgspec.json.Encoder().encode


class WebhookAttempts:
    def __init__(
        self, r: aioredis.Redis, keys: Keys, *, lease_s: float, max_per_endpoint: int, defer_ms: int = BUSY_DEFER_MS
    ) -> None:
        self.r = r
        self.keys = keys
        self.lease_ms = int(lease_s * 1000)
        self.max_per_endpoint = max_per_endpoint
        self.defer_ms = defer_ms
        self._take = TakeDeliveries(r, keys)
        self._start = StartAttempt(r, keys)
        self._finish = FinishAttempt(r, keys)

    async def take_due(self, now_ms: int | None = None, batch: int = 200) -> list[Attempt]:
        """Take the deliveries due now whose endpoint has room (others are looked at again shortly)."""
        now_ms = now_ms or _now_ms()
        rows = await self.r.zrangebyscore(self.keys.webhook_due, "-inf", now_ms, start=0, num=batch, withscores=True)
        if not rows:
            return []
        ids = [m.decode() for m, _ in rows]
        raws = await self.r.mget([self.keys.webhook_delivery(i) for i in ids])
        due = [
            (delivery_id, int(score), _endpoint_of.decode(raw).endpoint_id)
            for delivery_id, (_, score), raw in zip(ids, rows, raws)
            if raw is not None  # an expired record has nothing to attempt
        ]
        if not due:
            return []
        tokens = await self._take(
            due=due, now_ms=now_ms, lease_ms=self.lease_ms, limit=self.max_per_endpoint, defer_ms=self.defer_ms
        )
        return [Attempt(d, e, token) for (d, _, e), token in zip(due, tokens) if token > 0]

    async def start(self, attempt: Attempt) -> tuple[str, list[int]]:
        """(ok | not_holder | busy, start ms of earlier attempts whose sender died before recording)."""
        verdict, lost = await self._start(
            delivery_id=attempt.delivery_id,
            endpoint_id=attempt.endpoint_id,
            token=attempt.token,
            now_ms=_now_ms(),
            lease_ms=self.lease_ms,
            limit=self.max_per_endpoint,
            defer_ms=self.defer_ms,
        )
        return verdict, [int(ms) for ms in lost.split(",") if ms]

    async def finish(
        self,
        attempt: Attempt,
        rec: DeliveryRecord | None,
        *,
        ttl_s: int,
        dead_letter: tuple[bytes, bytes] | None = None,
    ) -> bool:
        """Store the delivery (None: leave it as it is, and end it), schedule its next attempt if it
        is still pending, add its dead letter, and free the endpoint slot, all only if `attempt` is
        still held. Whether it was."""
        pending = rec is not None and rec.status == "pending"
        return await self._finish(
            delivery_id=attempt.delivery_id,
            endpoint_id=attempt.endpoint_id,
            token=attempt.token,
            record=None if rec is None else _encode(rec),
            next_attempt_ms=rec.next_attempt_at if pending and rec is not None else None,
            ttl_s=ttl_s,
            dead_letter=dead_letter,
        )


def _now_ms() -> int:
    return int(time.time() * 1000)
