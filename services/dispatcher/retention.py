"""Retention that no write enforces by itself, run with the dispatcher's stream upkeep: dead letters
by age and count, and due webhook deliveries whose record has expired."""

from __future__ import annotations

import logging
import time

from shared.core.settings import Settings
from shared.lanes.dead_letters import apply_retention
from shared.redis.keys import Keys
from shared.webhooks.store import WebhookStore

log = logging.getLogger("inferq.dispatcher")


async def enforce_retention(ctx: dict) -> None:
    keys: Keys = ctx["keys"]
    settings: Settings = ctx["settings"]
    done = await apply_retention(
        ctx["stream_redis"],
        keys,
        max_age_s=settings.dead_letter_max_age_s,
        maxlen=settings.dead_letter_maxlen,
        now_ms=int(time.time() * 1000),
    )
    if done.dropped_by_age or done.dropped_by_count:
        log.info(
            "dead letters dropped by retention: %d older than %ds, %d beyond the %d kept",
            done.dropped_by_age,
            settings.dead_letter_max_age_s,
            done.dropped_by_count,
            settings.dead_letter_maxlen,
        )
    webhooks: WebhookStore = ctx["webhooks"]
    if lost := await webhooks.forget_expired_due():
        log.warning(
            "%d webhook deliveries expired before their attempt was made: nothing attempted them for "
            "INFERQ_WEBHOOK_DELIVERY_TTL_S (%ds) after they fell due",
            lost,
            webhooks.delivery_ttl_s,
        )
