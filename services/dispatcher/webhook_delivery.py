"""Webhook delivery: each attempt is an arq job; a scheduler loop enqueues deliveries as they fall
due. One attempt = one signed POST; its outcome decides the delivery's fate:
2xx succeeded; 410 Gone disables the endpoint; anything else (or no answer) is retried on the
configured schedule, later if the receiver sent Retry-After (429/503), and after the last attempt
the delivery is dead-lettered. Every attempt carries the same webhook-id, so receivers can
deduplicate (an attempt interrupted by a crash is made again)."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time

import httpx

from shared.api import DeadLetter
from shared.deadletters import META_FIELD, meta
from shared.errors import TRANSIENT_REDIS_ERRORS
from shared.keys import PAYLOAD_FIELD, Keys
from shared.metrics import WEBHOOK_DELIVERIES
from shared.settings import Settings
from shared.url_guard import UnsafeURL, check_url
from shared.webhook_store import WebhookStore
from shared.webhooks import DeliveryAttempt, signature_header

log = logging.getLogger("inferq.webhooks")
MAX_RETRY_AFTER_S = 24 * 3600
USER_AGENT = "inferq-webhooks/1"


async def deliver_webhook(ctx: dict, delivery_id: str) -> str:
    """arq job: make one attempt of a delivery. Returns what became of it."""
    store: WebhookStore = ctx["webhooks"]
    settings: Settings = ctx["settings"]
    keys: Keys = ctx["keys"]
    rec = await store.get_delivery(delivery_id)
    if rec is None or rec.status != "pending":
        return "skipped"
    endpoint = await store.get(rec.endpoint_id)
    if endpoint is None or endpoint.status != "enabled":
        rec.status, rec.next_attempt_at = "endpoint_disabled", None
        await store.save_delivery(rec)
        return rec.status
    started = time.time()
    code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    try:
        target = await check_url(
            endpoint.url, allow_private=settings.webhook_allow_private, allow_http=settings.webhook_allow_http
        )
        body = rec.payload.encode()
        ts = int(started)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": rec.id,
            "webhook-timestamp": str(ts),
            "webhook-signature": signature_header(endpoint, rec.id, ts, body),
        }
        if target.host_header:  # connect to the address that was checked, not to a fresh DNS answer
            headers["host"] = target.host_header
        extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
        resp = await ctx["http"].post(
            target.url, content=body, headers=headers, timeout=settings.webhook_timeout_s, extensions=extensions
        )
        code = resp.status_code
        if code in (429, 503):
            retry_after = _retry_after(resp.headers.get("retry-after"))
        if not 200 <= code < 300:
            error = f"HTTP {code}"
    except UnsafeURL as exc:
        error = f"refused: {exc}"
    except httpx.TimeoutException:
        error = f"no answer within {settings.webhook_timeout_s:g}s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # anything else is a failed attempt too: the delivery must not stall
        log.exception("webhook attempt failed unexpectedly", extra={"webhook_id": endpoint.id})
        error = f"{type(exc).__name__}: {exc}"
    rec.attempts.append(
        DeliveryAttempt(
            at=int(started * 1000), status_code=code, error=error, duration_ms=round((time.time() - started) * 1000, 1)
        )
    )
    extra = None
    if error is None:
        rec.status, rec.next_attempt_at = "succeeded", None
    elif code == 410:
        rec.status, rec.next_attempt_at = "endpoint_disabled", None
        await store.disable(
            endpoint.id, f"the receiver answered 410 Gone at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
        )
        log.warning("webhook endpoint disabled: 410 Gone", extra={"webhook_id": endpoint.id})
    else:
        schedule = settings.retry_schedule()
        n = len(rec.attempts)
        if n < len(schedule):
            delay = max(schedule[n], retry_after or 0.0)
            rec.next_attempt_at = int((time.time() + delay) * 1000)
        else:
            rec.status, rec.next_attempt_at = "dead_lettered", None
            info = DeadLetter(
                source="webhooks",
                reason="webhook_delivery_failed",
                attempts=n,
                error=f"last attempt: {error}",
                webhook_id=endpoint.id,
                delivery_id=rec.id,
            )
            log.warning("webhook delivery dead-lettered after %d attempts", n, extra={"webhook_id": endpoint.id})

            payload = rec.payload.encode()

            def extra(pipe, info=info, payload=payload):
                pipe.xadd(keys.dead_letter_stream, {PAYLOAD_FIELD: payload, META_FIELD: meta(info)})

    await store.save_delivery(rec, extra=extra)
    WEBHOOK_DELIVERIES.labels("retry_scheduled" if rec.status == "pending" else rec.status).inc()
    return rec.status


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped at a day."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


async def schedule_deliveries(
    store: WebhookStore, arq_redis, queue_name: str, stop: asyncio.Event, poll_s: float = 0.1, lease_s: float = 120.0
) -> None:
    """Hand due deliveries to arq. The arq job id names the attempt, so two dispatchers (or a
    crash between enqueue and lease) never run one attempt twice. A handed-out delivery stays in
    the due set `lease_s` later: if its attempt dies without recording anything (a crashed
    dispatcher, Redis gone at the wrong moment), it falls due again instead of stalling."""
    lease_ms = int(lease_s * 1000)
    while not stop.is_set():
        try:
            due = await store.due(int(time.time() * 1000))
            for did, score in due:
                await arq_redis.enqueue_job(
                    "deliver_webhook", did, _job_id=f"whd:{did}:{score}", _queue_name=queue_name
                )
                await store.taken(did, score, lease_ms)
        except TRANSIENT_REDIS_ERRORS as exc:
            log.warning("webhook scheduler: Redis unavailable (%s)", exc)
            due = []
        if not due:
            try:
                await asyncio.wait_for(stop.wait(), poll_s)
            except TimeoutError:
                pass
