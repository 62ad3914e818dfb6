"""Webhook endpoints and deliveries in Redis: the only code that reads or changes them."""

from __future__ import annotations

import builtins
import time

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from shared.core.errors import DeliveryPending, EndpointLimitReached
from shared.core.ids import new_webhook_id
from shared.redis.index_pages import cursor_position, read_indexes, start_at
from shared.redis.keys import Keys
from shared.webhooks.fan_out import FanOut
from shared.webhooks.records import (
    ROTATION_OVERLAP_S,
    DeliveryRecord,
    OldSecret,
    WebhookCreate,
    WebhookRecord,
    new_secret,
)
from shared.wire.api import JobWebhook

REQUEST_EVENT = "request.completed"
_endpoint_decoder = msgspec.json.Decoder(WebhookRecord)
_delivery_decoder = msgspec.json.Decoder(DeliveryRecord)
_enc = msgspec.json.Encoder()


class WebhookStore:
    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        ttl_s: int = 30 * 24 * 3600,
        *,
        delivery_ttl_s: int = 7 * 24 * 3600,
        deliveries_per_endpoint: int = 10_000,
    ) -> None:
        self.r = r
        self.keys = keys
        self.ttl_s = ttl_s  # a job's own endpoint, and a deleted endpoint's delivery list, are kept this long
        # a delivery is kept this long after it ended or its next attempt fell due; an endpoint's
        # delivery list keeps this many of the newest
        self.delivery_ttl_s = delivery_ttl_s
        self.deliveries_per_endpoint = deliveries_per_endpoint
        self._fan_out = FanOut(r)

    # Endpoints.
    async def create(
        self,
        tenant: str,
        body: WebhookCreate | JobWebhook,
        *,
        job_id: str | None = None,
        max_endpoints: int | None = None,
    ) -> WebhookRecord:
        """A new endpoint. A tenant's (not a job's own) counts against `max_endpoints`: raises
        EndpointLimitReached when it has that many already."""
        rec = WebhookRecord(
            id=new_webhook_id(),
            tenant=tenant,
            url=body.url,
            events=list(body.events),
            secret=new_secret(),
            created_at=int(time.time()),
            job_id=job_id,
            description=getattr(body, "description", ""),
        )
        index = self.keys.webhooks_index(tenant)
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    if job_id is None and max_endpoints is not None:  # counted and written in one step
                        await pipe.watch(index)
                        count = await pipe.zcard(index)
                        if count >= max_endpoints:
                            raise EndpointLimitReached(count, max_endpoints)
                    pipe.multi()
                    pipe.set(self.keys.webhook(rec.id), _enc.encode(rec))
                    if job_id is None:  # a job's own endpoint is found through its job, not listed with the tenant's
                        pipe.zadd(index, {rec.id: rec.created_at})
                        pipe.incr(self.keys.webhooks_version(tenant))
                        if REQUEST_EVENT in rec.events:
                            pipe.sadd(self.keys.webhook_request_subscribers, rec.id)
                    else:
                        pipe.expire(self.keys.webhook(rec.id), self.ttl_s)
                    await pipe.execute()
                    return rec
                except WatchError:
                    continue

    async def get(self, endpoint_id: str, tenant: str | None = None) -> WebhookRecord | None:
        raw = await self.r.get(self.keys.webhook(endpoint_id))
        if raw is None:
            return None
        rec = _endpoint_decoder.decode(raw)
        return rec if tenant is None or rec.tenant == tenant else None

    async def list(self, tenant: str) -> list[WebhookRecord]:
        ids = await self.r.zrange(self.keys.webhooks_index(tenant), 0, -1)
        if not ids:
            return []
        raws = await self.r.mget([self.keys.webhook(i.decode()) for i in ids])
        return [_endpoint_decoder.decode(raw) for raw in raws if raw is not None]

    async def delete(self, tenant: str, endpoint_id: str) -> bool:
        if await self.get(endpoint_id, tenant) is None:
            return False
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.keys.webhook(endpoint_id))
        pipe.zrem(self.keys.webhooks_index(tenant), endpoint_id)
        pipe.expire(self.keys.webhook_deliveries(endpoint_id), self.ttl_s)
        pipe.incr(self.keys.webhooks_version(tenant))
        pipe.srem(self.keys.webhook_request_subscribers, endpoint_id)
        await pipe.execute()
        return True

    async def version(self, tenant: str) -> int:
        return int(await self.r.get(self.keys.webhooks_version(tenant)) or 0)

    async def rotate(self, tenant: str, endpoint_id: str) -> WebhookRecord | None:
        """A new secret; the old one keeps signing for ROTATION_OVERLAP_S so receivers can switch."""

        def change(rec: WebhookRecord) -> None:
            now = int(time.time())
            rec.old_secrets = [o for o in rec.old_secrets if o.expires_at > now] + [
                OldSecret(secret=rec.secret, expires_at=now + ROTATION_OVERLAP_S)
            ]
            rec.secret = new_secret()

        return await self._update_endpoint(endpoint_id, change, tenant)

    async def disable(self, endpoint_id: str, reason: str) -> WebhookRecord | None:
        def change(rec: WebhookRecord) -> None:
            rec.status, rec.disabled_reason = "disabled", reason

        return await self._update_endpoint(endpoint_id, change)

    async def _update_endpoint(self, endpoint_id: str, change, tenant: str | None = None) -> WebhookRecord | None:
        key = self.keys.webhook(endpoint_id)
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        return None
                    rec = _endpoint_decoder.decode(raw)
                    if tenant is not None and rec.tenant != tenant:
                        return None
                    change(rec)
                    pipe.multi()
                    pipe.set(key, _enc.encode(rec), keepttl=True)
                    pipe.incr(self.keys.webhooks_version(rec.tenant))
                    if rec.status != "enabled":
                        pipe.srem(self.keys.webhook_request_subscribers, rec.id)
                    await pipe.execute()
                    return rec
                except WatchError:
                    continue

    # Deliveries.
    async def fan_out(
        self, stream: str, group: str, ack_ids: builtins.list[bytes], deliveries: builtins.list[DeliveryRecord]
    ) -> int:
        """Create deliveries and acknowledge the events they came from, in one step."""
        targets = [
            (self.keys.webhook_delivery(d.id), self.keys.webhook_deliveries(d.endpoint_id), d.id, _enc.encode(d))
            for d in deliveries
        ]
        return await self._fan_out(
            stream=stream,
            group=group,
            ack_ids=ack_ids,
            due=self.keys.webhook_due,
            now_ms=int(time.time() * 1000),
            deliveries=targets,
            ttl_s=self.delivery_ttl_s,
            per_endpoint=self.deliveries_per_endpoint,
        )

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        raw = await self.r.get(self.keys.webhook_delivery(delivery_id))
        return _delivery_decoder.decode(raw) if raw is not None else None

    async def read_endpoints(self, tenant: str, after: str | None, want: int) -> builtins.list[WebhookRecord]:
        """Up to `want` of the tenant's endpoints after the one with id `after`, oldest first."""
        index = self.keys.webhooks_index(tenant)
        position, by_id = await start_at(self.r, index, after, newest_first=False)

        async def load(ids: builtins.list[str]) -> builtins.list[WebhookRecord | None]:
            raws = await self.r.mget([self.keys.webhook(i) for i in ids])
            return [None if raw is None else _endpoint_decoder.decode(raw) for raw in raws]

        return await read_indexes(
            self.r, [index], after=position, by_id=by_id, want=want, newest_first=False, load=load
        )

    async def read_deliveries(
        self, endpoint_id: str, after: str | None, want: int
    ) -> builtins.list[DeliveryRecord] | None:
        """Up to `want` of the endpoint's deliveries after the one with id `after`, newest first;
        None when `after` is a delivery it no longer has (expired)."""
        index = self.keys.webhook_deliveries(endpoint_id)
        position = None
        if after is not None:
            score = await cursor_position(self.r, [index], after)
            if score is None:
                cursor = await self.get_delivery(after)
                if cursor is None or cursor.endpoint_id != endpoint_id:
                    return None
                score = cursor.created_at
            position = (score, after)

        async def load(ids: builtins.list[str]) -> builtins.list[DeliveryRecord | None]:
            raws = await self.r.mget([self.keys.webhook_delivery(i) for i in ids])
            return [None if raw is None else _delivery_decoder.decode(raw) for raw in raws]

        return await read_indexes(self.r, [index], after=position, want=want, newest_first=True, load=load)

    def expiry_s(self, rec: DeliveryRecord, now_ms: int) -> int:
        """Seconds a delivery is kept from now: the TTL after it ended, or after its next attempt is due."""
        if rec.status == "pending" and rec.next_attempt_at is not None:
            return self.delivery_ttl_s + max(0, rec.next_attempt_at - now_ms) // 1000
        return self.delivery_ttl_s

    async def forget_expired_due(self, batch: int = 500) -> int:
        """Drop the longest-due entries of the due set whose delivery record has expired (nothing
        could attempt them); how many were dropped."""
        oldest = await self.r.zrange(self.keys.webhook_due, 0, batch - 1)
        if not oldest:
            return 0
        async with self.r.pipeline(transaction=False) as pipe:
            for delivery_id in oldest:
                pipe.exists(self.keys.webhook_delivery(delivery_id.decode()))
            alive = await pipe.execute()
        gone = [d for d, exists in zip(oldest, alive) if not exists]
        if gone:
            await self.r.zrem(self.keys.webhook_due, *gone)
        return len(gone)

    async def save_delivery(self, rec: DeliveryRecord) -> None:
        """Store a delivery no attempt holds (an attempt records its outcome through
        services/dispatcher/webhooks/attempts.py) and schedule its next attempt, if any."""
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.keys.webhook_delivery(rec.id), _enc.encode(rec), ex=self.expiry_s(rec, int(time.time() * 1000)))
        pipe.zadd(self.keys.webhook_deliveries(rec.endpoint_id), {rec.id: rec.created_at}, xx=True)
        if rec.status == "pending" and rec.next_attempt_at is not None:
            pipe.zadd(self.keys.webhook_due, {rec.id: rec.next_attempt_at})
        else:
            pipe.zrem(self.keys.webhook_due, rec.id)
        await pipe.execute()

    async def redeliver(self, endpoint_id: str, delivery_id: str) -> DeliveryRecord | None:
        """Schedule an attempt now for a delivery that has ended (one still pending is already
        scheduled: a second attempt at once would race it; raises DeliveryPending)."""
        rec = await self.get_delivery(delivery_id)
        if rec is None or rec.endpoint_id != endpoint_id:
            return None
        if rec.status == "pending":
            raise DeliveryPending(rec)
        rec.status = "pending"
        rec.next_attempt_at = int(time.time() * 1000)
        await self.save_delivery(rec)
        return rec
