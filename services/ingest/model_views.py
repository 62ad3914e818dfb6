"""GET /v1/models: each configured model with its queue, scaling, health, fallback chain, prices
and spend, read in a few round trips whatever the number of models."""

from __future__ import annotations

import datetime as dt
import time
from typing import cast

import redis.asyncio as aioredis

from shared.catalog.budgets import Period
from shared.catalog.fallback import contract_kinds
from shared.catalog.models import ModelsConfig
from shared.catalog.money import usd
from shared.catalog.pricing import hourly_price
from shared.catalog.spend import LimitStatus, Spend, judge, read_spend
from shared.models.flow import model_queues, model_scaling
from shared.models.health import decode_record, unknown_health
from shared.models.start_phases import read_all as read_start_phases
from shared.planning.accuracy import read as quote_errors
from shared.redis.keys import Keys
from shared.wire.api import ModelHealth, ModelInfo, ModelList, ModelSpend, SpendLimitView
from shared.wire.contract import Kind

STALE_S = 10  # a health verdict older than this says no dispatcher is judging


async def model_list(r: aioredis.Redis, keys: Keys, models: ModelsConfig, tenant: str) -> ModelList:
    cfgs = [models.models[name] for name in models.names()]
    queues = await model_queues(r, keys, cfgs)
    health = await r.hgetall(keys.model_health)  # type: ignore[misc]
    now = dt.datetime.now(dt.UTC)
    spend = await read_spend(r, keys, now)
    statuses = judge(models.spend_limits(), spend, now)
    starts = await read_start_phases(r, keys)
    errors = await quote_errors(r, keys, [cfg.name for cfg in cfgs])
    data = []
    for cfg in cfgs:
        assert cfg.max_inflight is not None  # resolved when the models file is loaded
        data.append(
            ModelInfo(
                id=cfg.name,
                engine=cfg.engine,
                max_inflight=cfg.max_inflight,
                queue=queues[cfg.name][0],
                scaling=await model_scaling(r, keys, cfg),
                health=_health(health.get(cfg.name.encode())),
                fallback=list(cfg.fallback),
                price_per_hour=hourly_price(cfg),
                price_per_million_tokens=cfg.price_per_million_tokens,
                spend=_spend(cfg.name, spend, statuses, tenant),
                supports_response_format=bool(kinds := contract_kinds(models, cfg.name)),
                response_formats=sorted(cast("frozenset[Kind]", kinds)),
                start_phases=starts.get(cfg.name),
                quote_error=errors.get(cfg.name),
            )
        )
    return ModelList(data=data)


def _health(raw: bytes | None) -> ModelHealth:
    rec = decode_record(raw)
    now = time.time()
    if rec is None:
        return unknown_health(now)
    age = now - rec.at_ms / 1000
    if age > STALE_S:
        return ModelHealth(
            state=rec.health.state,
            reason=f"{rec.health.reason} (judged {age:.0f} s ago: is a dispatcher running?)",
            since=rec.health.since,
        )
    return rec.health


def _spend(model: str, spend: Spend, statuses: list[LimitStatus], tenant: str) -> ModelSpend:
    def total(period: Period) -> float:
        return usd(sum(v for (_, m), v in spend[period].items() if m == model))

    return ModelSpend(
        day_usd=total("day"),
        month_usd=total("month"),
        limits=[
            SpendLimitView(
                name=s.limit.name,
                period=s.limit.period,
                limit_usd=s.limit.usd,
                spent_usd=s.spent_usd,
                reached=s.reached,
                resets_at=s.resets_at,
            )
            for s in statuses
            if (s.limit.tenant is None or s.limit.tenant == tenant) and (not s.limit.models or model in s.limit.models)
        ],
    )
