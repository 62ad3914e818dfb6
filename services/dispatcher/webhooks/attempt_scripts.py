"""Wrappers of the webhook attempt scripts (lua/ beside this module: take_deliveries,
start_attempt, finish_attempt): an attempt is taken, started and recorded by one holder, named by its token."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.typing import EncodableT

from shared.redis import luapack, scripts
from shared.redis.keys import META_FIELD, PAYLOAD_FIELD, Keys


class TakeDeliveries:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.k = keys
        self._script = scripts.register(r, __name__, "take_deliveries")

    async def __call__(
        self, *, due: list[tuple[str, int, str]], now_ms: int, lease_ms: int, limit: int, defer_ms: int
    ) -> list[int]:
        """`due`: (delivery id, score read, endpoint id). Per delivery: its attempt's token, 0 (no
        longer due at that score) or -1 (its endpoint is at its limit)."""
        k = self.k
        keys = [k.webhook_due, k.webhook_attempt_seq]
        for delivery_id, _, endpoint_id in due:
            keys += (k.webhook_attempt(delivery_id), k.webhook_sending(endpoint_id))
        packed = luapack.pack([(delivery_id, score) for delivery_id, score, _ in due])
        return [int(t) for t in await self._script(keys=keys, args=[now_ms, lease_ms, limit, defer_ms, packed])]


class StartAttempt:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.k = keys
        self._script = scripts.register(r, __name__, "start_attempt")

    async def __call__(
        self,
        *,
        delivery_id: str,
        endpoint_id: str,
        token: int,
        now_ms: int,
        lease_ms: int,
        limit: int,
        defer_ms: int,
    ) -> tuple[str, str]:
        """(verdict: ok | not_holder | busy, start ms of attempts lost before, comma-separated)."""
        k = self.k
        keys = [k.webhook_attempt(delivery_id), k.webhook_due, k.webhook_sending(endpoint_id)]
        verdict, lost = await self._script(keys=keys, args=[delivery_id, token, now_ms, lease_ms, limit, defer_ms])
        return verdict.decode(), lost.decode()


class FinishAttempt:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.k = keys
        self._script = scripts.register(r, __name__, "finish_attempt")

    async def __call__(
        self,
        *,
        delivery_id: str,
        endpoint_id: str,
        token: int,
        record: bytes | None,
        next_attempt_ms: int | None,
        ttl_s: int,
        dead_letter: tuple[bytes, bytes] | None,
    ) -> bool:
        """Whether the holder of `token` recorded it (False: it no longer holds the attempt)."""
        k = self.k
        keys = [
            k.webhook_attempt(delivery_id),
            k.webhook_due,
            k.webhook_sending(endpoint_id),
            k.webhook_delivery(delivery_id),
            k.dead_letter_stream,
        ]
        payload, meta = dead_letter or (b"", b"")
        args: list[EncodableT] = [
            delivery_id,
            token,
            record or b"",
            "" if next_attempt_ms is None else next_attempt_ms,
            ttl_s,
            payload,
            meta,
            PAYLOAD_FIELD,
            META_FIELD,
        ]
        return bool(await self._script(keys=keys, args=args))
