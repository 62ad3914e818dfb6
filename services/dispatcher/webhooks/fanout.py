"""Webhook fan-out: reads the webhook events stream (every job event, and request events while some
endpoint subscribes to them; the collector writes it next to the public events stream, so the
fan-out does not read a request event nobody wants) and turns each event into one delivery per
subscribed endpoint (the tenant's endpoints and the job's own), created in the
same script that acknowledges the event. Delivery ids derive from (event, endpoint), so an event
read twice after a crash creates nothing twice."""

from __future__ import annotations

import logging
import time

import msgspec
import redis.asyncio as aioredis

from services.dispatcher.consumer import BatchConsumer
from services.dispatcher.webhooks.backlog import BacklogWatch
from shared.core.ids import delivery_id
from shared.jobs.store import WEBHOOK_EVENTS_MAXLEN
from shared.lanes.dead_letters import dead_letter
from shared.redis.keys import EVENT_FIELD, WEBHOOK_GROUP, Keys
from shared.redis.streams import unacknowledged
from shared.webhooks.records import DeliveryRecord, WebhookRecord
from shared.webhooks.store import WebhookStore
from shared.wire.api import DeadLetter

log = logging.getLogger("inferq.webhooks")
DEFAULT_TENANT = "default"
_EVENT, _TYPE, _JOB = EVENT_FIELD.encode(), b"type", b"job"


class _Event(msgspec.Struct):
    id: str
    time: str
    data: msgspec.Raw


_event_decoder = msgspec.json.Decoder(_Event)


class WebhookFanout(BatchConsumer):
    role = "webhooks"

    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        store: WebhookStore,
        *,
        count: int = 500,
        events_bound: int = WEBHOOK_EVENTS_MAXLEN,
        watch_every_s: float = 5.0,
        **kw,
    ) -> None:
        super().__init__(r, keys.webhook_events, WEBHOOK_GROUP, count=count, **kw)
        self.keys = keys
        self.store = store
        self.backlog = BacklogWatch(events_bound)
        self.watch_every_s = watch_every_s
        self._next_watch = 0.0
        self._endpoints: dict[str, tuple[int, list[WebhookRecord]]] = {}  # tenant -> (version, enabled endpoints)
        self.created = 0

    async def tick(self) -> None:
        """Every `watch_every_s`: the backlog against the stream's bound (logs once per episode)."""
        if time.monotonic() < self._next_watch:
            return
        self._next_watch = time.monotonic() + self.watch_every_s
        behind = await unacknowledged(self.r, self.stream, self.group)
        self.backlog.observe(behind, int(await self.r.get(self.keys.webhook_events_dropped) or 0))

    async def _tenant_endpoints(self, tenant: str, version: int) -> list[WebhookRecord]:
        """Endpoints change rarely and events are many: reload only when the tenant's version
        counter moved, which every change bumps before its reply, so an endpoint gets every
        event written after it was registered."""
        cached = self._endpoints.get(tenant)
        if cached is None or cached[0] != version:
            cached = self._endpoints[tenant] = (
                version,
                [e for e in await self.store.list(tenant) if e.status == "enabled"],
            )
        return cached[1]

    async def _job_targets(self, job_ids: set[str]) -> dict[str, tuple[str, WebhookRecord | None]]:
        """(tenant, own endpoint) of each job, in one round trip for the batch."""
        pipe = self.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.keys.job(job_id), ["tenant", "webhook_id"])
        out: dict[str, tuple[str, WebhookRecord | None]] = {}
        for job_id, (tenant, endpoint_id) in zip(job_ids, await pipe.execute()):
            own = await self.store.get(endpoint_id.decode()) if endpoint_id else None
            out[job_id] = (
                (tenant or DEFAULT_TENANT.encode()).decode(),
                own if own and own.status == "enabled" else None,
            )
        return out

    async def handle(self, entries) -> None:
        ack: list[bytes] = []
        deliveries: list[DeliveryRecord] = []
        jobs = await self._job_targets({f.get(_JOB, b"").decode() for _, f in entries} - {""})
        tenants = {tenant for tenant, _ in jobs.values()} | {DEFAULT_TENANT}
        versions = {t: await self.store.version(t) for t in tenants}
        now = int(time.time() * 1000)
        for entry_id, fields in entries:
            ack.append(entry_id)
            etype = fields.get(_TYPE, b"").decode()
            tenant, own = jobs.get(fields.get(_JOB, b"").decode(), (DEFAULT_TENANT, None))
            targets = [e for e in await self._tenant_endpoints(tenant, versions[tenant]) if etype in e.events]
            if own is not None and etype in own.events:
                targets.append(own)
            if not targets:
                continue
            try:
                event = _event_decoder.decode(fields[_EVENT])
            except (msgspec.DecodeError, KeyError) as exc:
                log.error("unreadable event %s skipped for webhooks: %s", entry_id, exc)
                continue
            payload = (
                b'{"type":"'
                + etype.encode()
                + b'","timestamp":"'
                + event.time.encode()
                + b'","data":'
                + bytes(event.data)
                + b"}"
            ).decode()
            for endpoint in targets:
                deliveries.append(
                    DeliveryRecord(
                        id=delivery_id(event.id, endpoint.id),
                        endpoint_id=endpoint.id,
                        event_type=etype,
                        event_id=event.id,
                        payload=payload,
                        created_at=now,
                        next_attempt_at=now,
                    )
                )
        self.created += await self.store.fan_out(self.stream, self.group, ack, deliveries)

    async def handle_poison(self, entries, deliveries: dict[bytes, int]) -> None:
        for entry_id, fields in entries:
            info = DeadLetter(
                source=self.stream,
                reason="max_attempts_exceeded",
                attempts=deliveries.get(entry_id, 0),
                error="webhook fan-out kept failing on this event",
                job_id=fields.get(_JOB, b"").decode() or None,
            )
            await dead_letter(self.r, self.keys, self.stream, self.group, entry_id, fields.get(_EVENT, b""), info)
