"""Webhook delivery: a scheduler loop takes deliveries as they fall due and hands each taken
attempt to an arq job. One attempt = one signed POST; its outcome decides the delivery's fate:
2xx succeeded; 410 Gone disables the endpoint; anything else (or no answer) is retried on the
configured schedule, later if the receiver sent Retry-After (429/503), and after the last attempt
the delivery is dead-lettered. Every attempt carries the same webhook-id, so receivers can
deduplicate. Each attempt is made once per due time (services/dispatcher/webhooks/attempts.py): an attempt
interrupted by a crash is made again once its lease ends, and shows in the history as lost."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable

import httpx

from services.dispatcher.webhooks.attempts import Attempt, WebhookAttempts
from services.dispatcher.webhooks.http_client import WebhookHttp
from shared.core.backoff import Backoff
from shared.core.errors import TRANSIENT_REDIS_ERRORS
from shared.core.settings import Settings
from shared.lanes.dead_letters import meta
from shared.ops.metrics import WEBHOOK_DELIVERIES
from shared.redis.outage import OUTAGE
from shared.webhooks.records import DeliveryAttempt, DeliveryRecord, WebhookRecord, signature_header
from shared.webhooks.store import WebhookStore
from shared.webhooks.url_guard import UnsafeURL, check_url
from shared.wire.api import DeadLetter

log = logging.getLogger("inferq.webhooks")
MAX_RETRY_AFTER_S = 24 * 3600
USER_AGENT = "inferq-webhooks/1"
LOST_ATTEMPT = "no outcome: the attempt was interrupted (its dispatcher stopped) and made again"


async def deliver_webhook(ctx: dict, delivery_id: str, endpoint_id: str, token: int) -> str:
    """arq job: make the attempt of a delivery taken under `token`. Returns what became of it."""
    store: WebhookStore = ctx["webhooks"]
    attempts: WebhookAttempts = ctx["attempts"]
    settings: Settings = ctx["settings"]
    attempt = Attempt(delivery_id, endpoint_id, token)
    verdict, lost = await attempts.start(attempt)
    if verdict != "ok":  # made or taken by another holder, or its endpoint is full: not ours to send
        return verdict
    rec = await store.get_delivery(delivery_id)
    if rec is None or rec.status != "pending":  # expired, or ended meanwhile: release the attempt
        await attempts.finish(attempt, None, ttl_s=store.delivery_ttl_s)
        return "skipped"
    rec.attempts += [DeliveryAttempt(at=ms, status_code=None, error=LOST_ATTEMPT) for ms in lost]
    endpoint = await store.get(rec.endpoint_id)
    if endpoint is None or endpoint.status != "enabled":
        rec.status, rec.next_attempt_at = "endpoint_disabled", None
        return await _record(attempts, store, attempt, rec)
    started = time.time()
    code, error, retry_after = await _post(ctx["http"], settings, endpoint, rec, started)
    rec.attempts.append(
        DeliveryAttempt(
            at=int(started * 1000), status_code=code, error=error, duration_ms=round((time.time() - started) * 1000, 1)
        )
    )
    dead_letter = await _fate(store, settings, endpoint, rec, code, error, retry_after)
    return await _record(attempts, store, attempt, rec, dead_letter)


async def _post(
    http: WebhookHttp, settings: Settings, endpoint: WebhookRecord, rec: DeliveryRecord, started: float
) -> tuple[int | None, str | None, float | None]:
    """One signed POST of the delivery: (status code, error, Retry-After seconds). Whatever goes
    wrong is an error of this attempt, never an exception: the delivery must not stall."""
    code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    body = rec.payload.encode()
    ts = int(started)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": rec.id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature_header(endpoint, rec.id, ts, body),
    }
    try:
        async with asyncio.timeout(
            settings.webhook_timeout_s
        ):  # the whole attempt, DNS included, ends inside its lease
            target = await check_url(
                endpoint.url, allow_private=settings.webhook_allow_private, allow_http=settings.webhook_allow_http
            )
            resp = await http.post(target, content=body, headers=headers, timeout=settings.webhook_timeout_s)
        code = resp.status_code
        if code in (429, 503):
            retry_after = _retry_after(resp.headers.get("retry-after"))
        if not 200 <= code < 300:
            error = f"HTTP {code}"
    except UnsafeURL as exc:
        error = f"refused: {exc}"
    except (httpx.TimeoutException, TimeoutError):
        error = f"no answer within {settings.webhook_timeout_s:g}s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # anything else is a failed attempt too
        log.exception("webhook attempt failed unexpectedly", extra={"webhook_id": endpoint.id})
        error = f"{type(exc).__name__}: {exc}"
    return code, error, retry_after


async def _fate(
    store: WebhookStore,
    settings: Settings,
    endpoint: WebhookRecord,
    rec: DeliveryRecord,
    code: int | None,
    error: str | None,
    retry_after: float | None,
) -> tuple[bytes, bytes] | None:
    """What the attempt's outcome makes of the delivery: succeeded, its endpoint disabled (410),
    retried on the schedule, or (after the last attempt) dead-lettered: then (payload, meta)."""
    if error is None:
        rec.status, rec.next_attempt_at = "succeeded", None
        return None
    if code == 410:
        rec.status, rec.next_attempt_at = "endpoint_disabled", None
        await store.disable(
            endpoint.id, f"the receiver answered 410 Gone at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
        )
        log.warning("webhook endpoint disabled: 410 Gone", extra={"webhook_id": endpoint.id})
        return None
    schedule = settings.retry_schedule()
    n = len(rec.attempts)
    if n < len(schedule):
        delay = max(schedule[n], retry_after or 0.0)
        rec.next_attempt_at = int((time.time() + delay) * 1000)
        return None
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
    return rec.payload.encode(), meta(info)


async def _record(
    attempts: WebhookAttempts,
    store: WebhookStore,
    attempt: Attempt,
    rec: DeliveryRecord,
    dead_letter: tuple[bytes, bytes] | None = None,
) -> str:
    """Store the outcome, if this attempt is still ours (a sender that outlived its lease is not)."""
    ttl_s = store.expiry_s(rec, int(time.time() * 1000))
    if not await attempts.finish(attempt, rec, ttl_s=ttl_s, dead_letter=dead_letter):
        log.warning("webhook attempt outlived its lease; its outcome is not recorded", extra={"webhook_id": rec.id})
        return "superseded"
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


def arq_enqueuer(arq_redis, queue_name: str) -> Callable[[Attempt], Awaitable[object]]:
    """Hands a taken attempt to arq; the job id names the attempt's token, so it is queued once."""

    async def enqueue(a: Attempt) -> object:
        return await arq_redis.enqueue_job(
            "deliver_webhook", *a, _job_id=f"whd:{a.delivery_id}:{a.token}", _queue_name=queue_name
        )

    return enqueue


async def schedule_deliveries(
    attempts: WebhookAttempts, enqueue: Callable[[Attempt], Awaitable[object]], stop: asyncio.Event, poll_s: float = 0.1
) -> None:
    """Take the deliveries that fall due and hand each attempt to `enqueue`. Several dispatchers
    may run this at once: each due attempt is taken by one. An attempt taken but never made (the
    dispatcher died before its job ran) falls due again when its lease ends."""
    backoff = Backoff(poll_s, 5.0)
    while not stop.is_set():
        wait_s = poll_s
        try:
            taken = await attempts.take_due()
            for attempt in taken:
                await enqueue(attempt)
            OUTAGE.recovered("webhook-scheduler")
            backoff.reset()
        except TRANSIENT_REDIS_ERRORS as exc:  # logged once per outage, by shared/redis/outage.py
            OUTAGE.failed("webhook-scheduler", exc)
            taken = []
            wait_s = backoff.next()  # Redis is unable: do not ask it ten times a second
        if not taken:
            try:
                await asyncio.wait_for(stop.wait(), wait_s)
            except TimeoutError:
                pass
