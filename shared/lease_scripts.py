"""Wrappers of the small lease and token scripts (shared/lua: lead, take_tokens):
each takes or extends a claim on one key, atomically."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared import scripts


class Lead:
    """The autoscaler's leader lease."""

    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, "lead")

    async def __call__(self, *, lease: str, holder: str, lease_ms: int) -> bool:
        """Take the lease if free, renew it if `holder` has it; whether `holder` leads."""
        return bool(await self._script(keys=[lease], args=[holder, lease_ms]))


class TakeTokens:
    """A tenant's request-rate token bucket."""

    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, "take_tokens")

    async def __call__(self, *, bucket: str, rate: float, burst: int, cost: int, now_ms: int) -> tuple[bool, float]:
        """(granted, tokens left): `cost` tokens are taken only if all are there."""
        ok, tokens = await self._script(keys=[bucket], args=[rate, burst, cost, now_ms])
        return bool(int(ok)), float(tokens)
