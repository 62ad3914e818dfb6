"""Reading spend and judging spend limits (shared/catalog/budgets.py) against it.

The dispatcher judges every limit each second and publishes the reached ones (`Keys.budgets_reached`,
a short TTL); ingest reads that one key per submission, so refusing work costs one GET.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import redis.asyncio as aioredis
from msgspec import Struct

from shared.catalog.budgets import PERIODS, Limit, Period, period_end, period_id
from shared.catalog.money import usd
from shared.redis.keys import Keys, parse_spend

REACHED_TTL_S = 5  # a judgement older than this is gone: limits are then not enforced


class LimitStatus(Struct, frozen=True, kw_only=True):
    limit: Limit
    spent_micros: int
    reached: bool
    resets_at: int  # unix seconds

    @property
    def spent_usd(self) -> float:
        return usd(self.spent_micros)


Spend = dict[Period, dict[tuple[str, str], int]]


async def read_spend(r: aioredis.Redis, keys: Keys, now: dt.datetime) -> Spend:
    """This UTC day's and month's spend per (tenant, serving model), in micro-dollars."""
    async with r.pipeline(transaction=False) as pipe:
        for period in PERIODS:
            pipe.hgetall(keys.spend(period, period_id(period, now)))
        replies = await pipe.execute()
    return {period: parse_spend(raw) for period, raw in zip(PERIODS, replies)}


def judge(limits: list[Limit], spend: Spend, now: dt.datetime) -> list[LimitStatus]:
    return [
        LimitStatus(
            limit=lim,
            spent_micros=lim.spent_micros(spend[lim.period]),
            reached=lim.reached(spend[lim.period]),
            resets_at=int(period_end(lim.period, now).timestamp()),
        )
        for lim in limits
    ]


_reached_decoder = msgspec.json.Decoder(list[LimitStatus])


async def publish_reached(r: aioredis.Redis, keys: Keys, statuses: list[LimitStatus]) -> None:
    reached = [s for s in statuses if s.reached]
    await r.set(keys.budgets_reached, msgspec.json.encode(reached), ex=REACHED_TTL_S)


async def read_reached(r: aioredis.Redis, keys: Keys) -> list[LimitStatus]:
    raw = await r.get(keys.budgets_reached)
    return _reached_decoder.decode(raw) if raw else []


def blocking(reached: list[LimitStatus], tenant: str, model: str) -> LimitStatus | None:
    """The first reached limit that covers `tenant`'s work on `model`, if any."""
    return next((s for s in reached if s.limit.covers(tenant, model)), None)
