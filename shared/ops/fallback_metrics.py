"""Prometheus figures of fallback, health and spend, read from Redis before a scrape (any process
that serves /metrics reports the same): inferq_model_health{model,state} (1 for the current
state), inferq_fallback_moves_total{from,to,reason} (`to` is `-` for requests ended because no
model of the chain could take them), inferq_spend_usd{model,period} (this UTC day and month)."""

from __future__ import annotations

import datetime as dt

import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shared.catalog.budgets import PERIODS
from shared.catalog.models import ModelsConfig
from shared.catalog.money import usd
from shared.catalog.spend import read_spend
from shared.models.health import decode_record
from shared.redis.keys import Keys
from shared.wire.api import HealthState

STATES: tuple[HealthState, ...] = ("serving", "cold-starting", "degraded", "unavailable")


class FallbackFigures:
    def __init__(self, registry) -> None:
        self.read = False
        self.health: dict[str, str] = {}
        self.moves: dict[tuple[str, str, str], int] = {}
        self.spend: dict[tuple[str, str], float] = {}
        registry.register(self)

    def collect(self):
        if not self.read:
            return
        health = GaugeMetricFamily(
            "inferq_model_health", "1 for the model's current health state", labels=["model", "state"]
        )
        for model, state in sorted(self.health.items()):
            for s in STATES:
                health.add_metric([model, s], 1 if s == state else 0)
        moves = CounterMetricFamily(
            "inferq_fallback_moves", "Requests moved along fallback chains", labels=["from", "to", "reason"]
        )
        for (src, dst, reason), n in sorted(self.moves.items()):
            moves.add_metric([src, dst, reason], n)
        spend = GaugeMetricFamily("inferq_spend_usd", "Spend this UTC day / month", labels=["model", "period"])
        for (model, period), v in sorted(self.spend.items()):
            spend.add_metric([model, period], v)
        yield from (health, moves, spend)

    async def refresh(self, r: aioredis.Redis, keys: Keys, models: ModelsConfig) -> None:
        async with r.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.model_health)
            pipe.hgetall(keys.fallback_moves)
            health_raw, moves_raw = await pipe.execute()
        self.health = {}
        for name, raw in health_raw.items():
            rec = decode_record(raw)
            if rec is not None and name.decode() in models.models:
                self.health[name.decode()] = rec.health.state
        self.moves = {}
        for field, n in moves_raw.items():
            src, dst, reason = field.decode().split(" ", 2)
            self.moves[(src, dst, reason)] = int(n)
        spend = await read_spend(r, keys, dt.datetime.now(dt.UTC))
        self.spend = {
            (name, period): usd(sum(v for (_, m), v in spend[period].items() if m == name))
            for name in models.names()
            for period in PERIODS
        }
        self.read = True
