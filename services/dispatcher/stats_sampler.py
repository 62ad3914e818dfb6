"""Once per stats bucket, each model's backlog and replica count into its stats hash, so
GET /v1/model-stats can show them over the last minutes (shared/models/stats.py)."""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from shared.catalog.models import ModelsConfig
from shared.models.flow import model_queue, model_scaling
from shared.models.stats import BUCKET_S, record_samples
from shared.redis.keys import Keys

log = logging.getLogger("inferq.stats")


async def sample_once(r: aioredis.Redis, keys: Keys, models: ModelsConfig, now_s: float | None = None) -> None:
    samples: dict[str, tuple[int, int]] = {}
    for name in models.names():
        cfg = models.models[name]
        queue = await model_queue(r, keys, cfg)
        scaling = await model_scaling(r, keys, cfg)
        replicas = scaling.current if scaling.current is not None else queue.consumers
        samples[name] = (queue.unfinished, replicas)
    await record_samples(r, keys, samples, now_s)


async def sample_models(
    r: aioredis.Redis, keys: Keys, models: ModelsConfig, stop: asyncio.Event, every_s: float = BUCKET_S
) -> None:
    """Samples shortly after each bucket starts; every dispatcher does (they write the same
    figures), so the history has no gap while one of them restarts."""
    while not stop.is_set():
        try:
            await sample_once(r, keys, models)
        except Exception as exc:  # statistics only: Redis trouble is reported by the consumers
            log.debug("model stats sample failed: %s", exc)
        wait = every_s - (time.time() % every_s) + 0.05
        try:
            await asyncio.wait_for(stop.wait(), wait)
        except TimeoutError:
            pass
