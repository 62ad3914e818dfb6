"""Refuse a new job that a reached spend limit covers (429 `budget_exceeded`), unless the model's
fallback chain has a model no reached limit covers: then it is accepted and its requests move
there (services/dispatcher/fallback.py)."""

from __future__ import annotations

import datetime as dt
import time

import redis.asyncio as aioredis

from services.ingest.errors.client import ApiException
from shared.catalog.fallback import next_model
from shared.catalog.models import ModelsConfig
from shared.catalog.spend import LimitStatus, blocking, read_reached
from shared.redis.keys import Keys


class BudgetRoutes:
    """Where a tenant's new requests go while spend limits are reached: a model a reached limit
    covers sends them to the first model of its chain no reached limit covers (they are written
    there as moved requests, reason `budget_exceeded`), or refuses the job."""

    def __init__(self, models: ModelsConfig, reached: list[LimitStatus], tenant: str) -> None:
        self.models = models
        self.reached = reached
        self.tenant = tenant

    def target(self, model: str) -> str | None:
        """The model to write `model`'s requests to instead (None: `model` itself). Raises the
        429 when a reached limit covers it and no model of its chain is free of one."""
        spent = blocking(self.reached, self.tenant, model) if self.reached else None
        if spent is None:
            return None
        to = next_model(self.models, model, lambda m: blocking(self.reached, self.tenant, m) is None)
        if to is not None:
            return to
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


async def budget_routes(r: aioredis.Redis, keys: Keys, models: ModelsConfig, tenant: str) -> BudgetRoutes:
    """A models file that sets no spend limit has none to reach: no read (one round trip less per
    job; the dispatcher judges the limits of the same file)."""
    reached = await read_reached(r, keys) if models.spend_limits() else []
    return BudgetRoutes(models, reached, tenant)
