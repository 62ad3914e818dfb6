"""A worker's two ends of a request, each acknowledging its lane-stream entry in the same script
as its effect: publish the result (lua/publish.lua) or hand the request back (lua/hand_back.lua)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.typing import EncodableT

from shared.redis import luapack, scripts
from shared.redis.keys import (
    BUNDLE_FIELD,
    DELIVERED_FIELD,
    DROP_FIELD,
    META_FIELD,
    PAYLOAD_FIELD,
    REASON_FIELD,
    WORKER_GROUP,
)


class Publish:
    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, __name__, "publish")

    async def __call__(
        self,
        *,
        streams: list[str],
        results_stream: str,
        dead_letter_stream: str,
        moves_counter: str,
        outcomes: list[tuple],
        results: bytes,
        move_keys: list[str] = (),  # type: ignore[assignment]
    ) -> int:
        """`outcomes`: per entry, (index in `streams` + 1, entry id, the byte length of its result in
        `results` (0: none), dropped request, drop reason, dead letter, dead-letter meta, moved
        request, then for a move the indexes in KEYS of the next model's staging queue, ring and
        flow, the lane and the counter field), bytes as `luapack.lua_bytes`, b'' for none.
        `results`: the msgpack array of the encoded ResultRecords, in outcome order; those of the
        acknowledged entries go to the results stream as one entry. `move_keys` follow the fixed
        keys. Returns how many were still pending here and published."""
        args: list[EncodableT] = [
            WORKER_GROUP,
            BUNDLE_FIELD,
            DROP_FIELD,
            REASON_FIELD,
            META_FIELD,
            PAYLOAD_FIELD,
            luapack.pack(outcomes),
            len(streams),
            results,
        ]
        keys = [*streams, results_stream, dead_letter_stream, moves_counter, *move_keys]
        return int(await self._script(keys=keys, args=args))


class HandBack:
    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, __name__, "hand_back")

    async def __call__(
        self,
        *,
        stream: str,
        entries: list[tuple[bytes, list[bytes]]],
        group: str = WORKER_GROUP,
        field: str = PAYLOAD_FIELD,
        delivered: dict[bytes, int] | None = None,
    ) -> int:
        """Re-add (entry id, payloads) entries still pending here as unread ones, one per payload,
        each carrying its entry's deliveries so far when `delivered` names it; how many entries
        were given back."""
        b = luapack.lua_bytes
        times = delivered or {}
        packed = luapack.pack([(b(i), [b(p) for p in payloads], times.get(i, 0)) for i, payloads in entries])
        return int(await self._script(keys=[stream], args=[group, field, DELIVERED_FIELD, packed]))
