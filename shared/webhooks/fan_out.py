"""The fan-out of events to webhook deliveries (lua/fan_out.lua): the events read are
acknowledged in the same script that creates their deliveries and schedules them."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.redis import luapack, scripts


class FanOut:
    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, __name__, "fan_out")

    async def __call__(
        self,
        *,
        stream: str,
        group: str,
        ack_ids: list[bytes],
        due: str,
        now_ms: int,
        deliveries: list[tuple[str, str, str, bytes]],
        ttl_s: int,
        per_endpoint: int,
    ) -> int:
        """`deliveries`: (delivery key, endpoint's delivery index key, delivery id, record JSON);
        each expires `ttl_s` after it was due unless saved again, each index keeps `per_endpoint`.
        Returns how many were created (not there before)."""
        keys = [stream, due]
        items = []
        for key, index, delivery_id, record in deliveries:
            keys += (key, index)
            items.append((delivery_id, luapack.lua_bytes(record)))
        batch = luapack.pack([[luapack.lua_bytes(i) for i in ack_ids], items])
        return int(await self._script(keys=keys, args=[group, now_ms, batch, ttl_s, per_endpoint]))
