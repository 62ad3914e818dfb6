"""How wrong the quotes were: each finished job's quote (made when it was accepted) against what
happened, kept per model it named (`Keys.quote_errors`, the newest KEEP). The collector records
a job when it ends; GET /v1/models shows the errors, and the planner widens its p90 by them.
Statistics, not accounting: a job that ends while its collector dies is not recorded."""

from __future__ import annotations

import math

import msgspec
import redis.asyncio as aioredis

from shared.planning.plan import DEFAULT_SPREAD, MIN_SPREAD
from shared.redis.keys import Keys
from shared.wire.api import QuoteError, QuoteSample

KEEP = 100
SHOWN = 5  # samples GET /v1/models lists
MIN_JOBS = 3  # finished jobs before the measured spread replaces the default

_decoder = msgspec.json.Decoder(QuoteSample)
_encoder = msgspec.json.Encoder()


async def record(r: aioredis.Redis, keys: Keys, samples: list[tuple[list[str], QuoteSample]]) -> None:
    """Append each (models, sample); one round trip."""
    if not samples:
        return
    async with r.pipeline(transaction=False) as pipe:
        for models, sample in samples:
            doc = _encoder.encode(sample)
            for model in models:
                pipe.lpush(keys.quote_errors(model), doc)
                pipe.ltrim(keys.quote_errors(model), 0, KEEP - 1)
        await pipe.execute()


async def read(r: aioredis.Redis, keys: Keys, models: list[str]) -> dict[str, QuoteError]:
    """The quote errors of each model that has some."""
    async with r.pipeline(transaction=False) as pipe:
        for model in models:
            pipe.lrange(keys.quote_errors(model), 0, KEEP - 1)
        lists = await pipe.execute()
    out: dict[str, QuoteError] = {}
    for model, raw in zip(models, lists):
        samples = []
        for doc in raw:
            try:
                samples.append(_decoder.decode(doc))
            except msgspec.DecodeError:
                continue
        if samples:
            out[model] = summary(samples)
    return out


def summary(samples: list[QuoteSample]) -> QuoteError:
    finish = sorted(s.actual_s / s.quoted_s - 1 for s in samples if s.quoted_s > 0)
    absolute = sorted(abs(e) for e in finish)
    cost = sorted(s.actual_cost / s.quoted_cost - 1 for s in samples if s.quoted_cost > 0)
    return QuoteError(
        jobs=len(samples),
        finish_error_p50=_round(_quantile(finish, 0.5)),
        finish_error_p90=_round(_quantile(absolute, 0.9)),
        cost_error_p50=_round(_quantile(cost, 0.5)),
        latest=samples[:SHOWN],
    )


def spread(error: QuoteError | None) -> float:
    """How far past its p50 a duration's p90 lies, relative: the measured p90 of the errors once
    MIN_JOBS jobs were measured, never below MIN_SPREAD."""
    if error is None or error.jobs < MIN_JOBS or error.finish_error_p90 is None:
        return DEFAULT_SPREAD
    return max(MIN_SPREAD, error.finish_error_p90)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
