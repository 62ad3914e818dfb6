"""Wrappers of the scripts that acknowledge stream entries together with what they produced
(shared/lua: publish, hand_back, dead_letter, fan_out), and the dead letters' retention."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.typing import EncodableT

from shared import luapack, scripts
from shared.keys import BUNDLE_FIELD, DELIVERED_FIELD, DROP_FIELD, META_FIELD, PAYLOAD_FIELD, REASON_FIELD, WORKER_GROUP


class Publish:
    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, "publish")

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
        self._script = scripts.register(r, "hand_back")

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


class DeadLetter:
    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, "dead_letter")

    async def __call__(
        self, *, stream: str, group: str, entry_id: bytes, dead_letter_stream: str, payload: bytes, meta: bytes
    ) -> bool:
        """Whether the entry was still held by `group` and moved."""
        args: list[EncodableT] = [group, entry_id, PAYLOAD_FIELD, payload, META_FIELD, meta]
        return bool(await self._script(keys=[stream, dead_letter_stream], args=args))


class TrimDeadLetters:
    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, "trim_dead_letters")

    async def __call__(
        self,
        *,
        stream: str,
        dropped: str,
        tenants: str,
        unattributed: str,
        indexes: dict[str, str],
        min_id: str,
        maxlen: int,
    ) -> tuple[int, int, int]:
        """(removed by age, removed by count, entries kept); `indexes`: tenant -> its index."""
        names = list(indexes)
        by_age, by_count, kept = await self._script(
            keys=[stream, dropped, tenants, unattributed, *(indexes[t] for t in names)], args=[min_id, maxlen, *names]
        )
        return int(by_age), int(by_count), int(kept)


class FanOut:
    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, "fan_out")

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
