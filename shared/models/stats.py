"""A model's recent figures in fixed time buckets: results, failures and latency (added by the
collector once per batch), backlog and replicas (written by the dispatcher's sampler once per
bucket). GET /v1/model-stats reads them; nothing on a request's own path writes here.

One hash per model (`Keys.model_stats`), fields `<bucket start s>:<name>`, so reading every model
is one HGETALL each in one round trip. Buckets older than the window are deleted by the sampler,
and the hash expires when nobody writes it. These are statistics, not accounting: a batch the
collector applies twice (after a crash) may be counted twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis.asyncio as aioredis

from shared.core.states import RequestStatus
from shared.redis.keys import Keys
from shared.wire.api import ModelStats, ModelStatsSample
from shared.wire.messages import ResultRecord

BUCKET_S = 5
WINDOW_S = 300  # the history GET /v1/model-stats shows
SUMMARY_S = 60  # throughput and latency are over this last stretch
_EXPIRE_S = WINDOW_S * 2

# field names within a bucket
COMPLETED, FAILED, RAN, LATENCY_MS, INFERENCE_MS = "n", "f", "ran", "lat", "inf"
BACKLOG, REPLICAS = "backlog", "replicas"


def bucket_of(now_s: float) -> int:
    return int(now_s // BUCKET_S) * BUCKET_S


class _Tally:
    __slots__ = ("completed", "failed", "ran", "latency_ms", "inference_ms")

    def __init__(self) -> None:
        self.completed = self.failed = self.ran = 0
        self.latency_ms = self.inference_ms = 0.0


class ResultTally:
    """Sums collector batches per model in memory, then writes them in one round trip."""

    def __init__(self) -> None:
        self.models: dict[str, _Tally] = {}

    def add(self, rec: ResultRecord) -> None:
        model = rec.served_by or rec.model  # the model that did the work (a fallback, perhaps)
        t = self.models.get(model)
        if t is None:
            t = self.models[model] = _Tally()
        t.completed += 1
        if rec.status == RequestStatus.FAILED:
            t.failed += 1
        inference = rec.inference_ms
        if inference > 0:  # it ran (a request dropped before running has no timings)
            t.ran += 1
            t.inference_ms += inference
            t.latency_ms += rec.queued_ms + inference

    def merge(self, other: ResultTally) -> None:
        for model, t in other.models.items():
            mine = self.models.get(model)
            if mine is None:
                self.models[model] = t
                continue
            mine.completed += t.completed
            mine.failed += t.failed
            mine.ran += t.ran
            mine.inference_ms += t.inference_ms
            mine.latency_ms += t.latency_ms

    async def flush(self, r: aioredis.Redis, keys: Keys, now_s: float | None = None) -> None:
        if not self.models:
            return
        b = bucket_of(time.time() if now_s is None else now_s)
        async with r.pipeline(transaction=False) as pipe:
            for model, t in self.models.items():
                key = keys.model_stats(model)
                pipe.hincrby(key, f"{b}:{COMPLETED}", t.completed)
                if t.failed:
                    pipe.hincrby(key, f"{b}:{FAILED}", t.failed)
                if t.ran:
                    pipe.hincrby(key, f"{b}:{RAN}", t.ran)
                    pipe.hincrbyfloat(key, f"{b}:{LATENCY_MS}", round(t.latency_ms, 3))
                    pipe.hincrbyfloat(key, f"{b}:{INFERENCE_MS}", round(t.inference_ms, 3))
                pipe.expire(key, _EXPIRE_S)
            await pipe.execute()
        self.models.clear()


async def record_samples(
    r: aioredis.Redis, keys: Keys, samples: dict[str, tuple[int, int]], now_s: float | None = None
) -> None:
    """Backlog and replicas of each model for the current bucket, and the buckets that left the
    window deleted (those found in the hash, so a sampler that was down leaves nothing behind)."""
    now_s = time.time() if now_s is None else now_s
    b = bucket_of(now_s)
    oldest = b - WINDOW_S
    async with r.pipeline(transaction=False) as pipe:
        for model in samples:
            pipe.hkeys(keys.model_stats(model))
        fields = await pipe.execute()
    async with r.pipeline(transaction=False) as pipe:
        for (model, (backlog, replicas)), names in zip(samples.items(), fields):
            key = keys.model_stats(model)
            stale = [f for f in names if int(f.split(b":", 1)[0]) < oldest]
            if stale:
                pipe.hdel(key, *stale)
            pipe.hset(key, mapping={f"{b}:{BACKLOG}": backlog, f"{b}:{REPLICAS}": replicas})
            pipe.expire(key, _EXPIRE_S)
        await pipe.execute()


async def read_stats(
    r: aioredis.Redis, keys: Keys, models: Iterable[str], now_s: float | None = None
) -> list[ModelStats]:
    """Every model's figures over the window, in one round trip."""
    names = list(models)
    now_s = time.time() if now_s is None else now_s
    async with r.pipeline(transaction=False) as pipe:
        for model in names:
            pipe.hgetall(keys.model_stats(model))
        hashes = await pipe.execute()
    return [_stats(model, h, now_s) for model, h in zip(names, hashes)]


def _stats(model: str, raw: dict[bytes, bytes], now_s: float) -> ModelStats:
    current = bucket_of(now_s)
    buckets: dict[int, dict[str, float]] = {}
    for field, value in raw.items():
        start, _, name = field.decode().partition(":")
        buckets.setdefault(int(start), {})[name] = float(value)
    samples = [_sample(at, buckets.get(at, {})) for at in range(current - WINDOW_S + BUCKET_S, current + 1, BUCKET_S)]
    recent = [buckets.get(at, {}) for at in range(current - SUMMARY_S, current + 1, BUCKET_S)]
    elapsed = SUMMARY_S + (now_s - current)  # the last full minute and the current bucket so far
    completed = sum(b.get(COMPLETED, 0) for b in recent)
    ran = sum(b.get(RAN, 0) for b in recent)
    return ModelStats(
        id=model,
        bucket_s=BUCKET_S,
        window_s=WINDOW_S,
        throughput_per_s=round(completed / elapsed, 3),
        latency_ms=round(sum(b.get(LATENCY_MS, 0) for b in recent) / ran, 3) if ran else None,
        inference_ms=round(sum(b.get(INFERENCE_MS, 0) for b in recent) / ran, 3) if ran else None,
        samples=samples,
    )


def _sample(at: int, b: dict[str, float]) -> ModelStatsSample:
    ran = b.get(RAN, 0)
    return ModelStatsSample(
        at=at,
        completed=int(b.get(COMPLETED, 0)),
        failed=int(b.get(FAILED, 0)),
        latency_ms=round(b.get(LATENCY_MS, 0) / ran, 3) if ran else None,
        backlog=int(b[BACKLOG]) if BACKLOG in b else None,
        replicas=int(b[REPLICAS]) if REPLICAS in b else None,
    )
