"""A tenant's request-rate token bucket (lua/take_tokens.lua), refilled and taken from in one
script, so concurrent ingest processes share one budget exactly."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.redis import scripts


class TakeTokens:
    """A tenant's request-rate token bucket."""

    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, __name__, "take_tokens")

    async def __call__(self, *, bucket: str, rate: float, burst: int, cost: int, now_ms: int) -> tuple[bool, float]:
        """(granted, tokens left): `cost` tokens are taken only if all are there."""
        ok, tokens = await self._script(keys=[bucket], args=[rate, burst, cost, now_ms])
        return bool(int(ok)), float(tokens)
