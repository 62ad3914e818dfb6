"""Refuse a new job that a reached spend limit covers (429 `budget_exceeded`), unless the model's
fallback chain has a model no reached limit covers: then it is accepted and its requests move
there (services/dispatcher/fallback.py)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable

import redis.asyncio as aioredis

from services.ingest.errors import ApiException
from shared.fallback import next_model
from shared.keys import Keys
from shared.models_config import ModelsConfig
from shared.spend import blocking, read_reached


async def refuse_over_budget(
    r: aioredis.Redis, keys: Keys, models: ModelsConfig, job_models: Iterable[str], tenant: str
) -> None:
    reached = await read_reached(r, keys)
    if not reached:
        return
    for model in sorted(job_models):
        spent = blocking(reached, tenant, model)
        if spent is None or next_model(models, model, lambda m: blocking(reached, tenant, m) is None):
            continue
        resets = dt.datetime.fromtimestamp(spent.resets_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        exc = ApiException(
            429,
            f"model {model!r}: the spend limit {spent.limit.name} of {spent.limit.usd:.2f} USD is reached "
            f"({spent.spent_usd:.2f} USD spent); it resets at {resets}",
            type="budget_exceeded",
            model=model,
            headers={"Retry-After": str(max(1, spent.resets_at - int(time.time())))},
        )
        exc.body.budget = spent.limit.name
        exc.body.limit_usd = spent.limit.usd
        exc.body.spent_usd = spent.spent_usd
        exc.body.resets_at = spent.resets_at
        raise exc
