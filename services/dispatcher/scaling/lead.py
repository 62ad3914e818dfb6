"""A leader lease (lua/lead.lua): one dispatcher at a time runs the autoscaler (or delivers to an
event sink), and a second takes over only once the holder has stopped renewing it."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.redis import scripts


class Lead:
    """A leader lease, named by its key."""

    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, __name__, "lead")

    async def __call__(self, *, lease: str, holder: str, lease_ms: int) -> bool:
        """Take the lease if free, renew it if `holder` has it; whether `holder` leads."""
        return bool(await self._script(keys=[lease], args=[holder, lease_ms]))
