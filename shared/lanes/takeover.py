"""Wrappers of the scripts that move work away from consumers that are gone (lua/ beside this
module: take_over, forget_consumer, drop_stranded)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.typing import EncodableT

from shared.redis import luapack, scripts
from shared.redis.keys import DROP_FIELD, PAYLOAD_FIELD, REASON_FIELD, WORKER_GROUP

Claimed = tuple[bytes, dict[bytes, bytes], int]  # entry id, fields, times delivered (this one included)


class TakeOver:
    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, __name__, "take_over")

    async def __call__(
        self, *, stream: str, heartbeat: str, group: str, dead: str, taker: str, min_idle_ms: int, count: int
    ) -> list[Claimed]:
        """Claim for `taker` up to `count` entries `dead` holds, unless its heartbeat is back."""
        args: list[EncodableT] = [group, dead, taker, min_idle_ms, count]
        rows = await self._script(keys=[stream, heartbeat], args=args)
        return [(entry_id, dict(zip(flat[::2], flat[1::2])), int(times)) for entry_id, flat, times in rows]


class ForgetConsumer:
    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, __name__, "forget_consumer")

    async def __call__(self, *, stream: str, heartbeat: str, group: str, consumer: str) -> bool:
        """Remove `consumer` from the group if it has no heartbeat and holds nothing; whether it was."""
        return bool(await self._script(keys=[stream, heartbeat], args=[group, consumer]))


class DropStranded:
    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, __name__, "drop_stranded")

    async def __call__(self, *, job: str, results_stream: str, streams: list[str], entry_ids: list[list[bytes]]) -> int:
        """Turn a stopping job's entries (`entry_ids[i]` in `streams[i]`) into drop notices; how many."""
        packed = luapack.pack([[luapack.lua_bytes(i) for i in ids] for ids in entry_ids])
        args: list[EncodableT] = [WORKER_GROUP, PAYLOAD_FIELD, DROP_FIELD, REASON_FIELD, packed]
        return int(await self._script(keys=[job, results_stream, *streams], args=args))
