"""Wrappers of the router's scripts (services/dispatcher/lua/admit.lua, feed.lua), which with stop_job.lua and
requeue.lua are the only writers of the staging queues (shared/redis/lua/lib/staging.lua)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.typing import EncodableT

from shared.redis import luapack, scripts
from shared.redis.keys import DROP_FIELD, LANES, PAYLOAD_FIELD, REASON_FIELD, ROUTER_GROUP, WORKER_GROUP, Keys


class AdmitBatch:
    """One admit call: per ingest entry, the operations to apply if its XACK succeeds."""

    def __init__(self, keys: Keys) -> None:
        self.k = keys
        self._keys = luapack.KeyList([keys.ingest_stream, keys.results_stream])
        self._key = self._keys.index
        self.entries: list[list] = []

    @property
    def keys(self) -> list[str]:
        return self._keys.keys

    def entry(self, entry_id: bytes, ops: list[list]) -> None:
        self.entries.append([luapack.lua_bytes(entry_id), ops])

    def stage(
        self,
        model: str,
        lane: str,
        job_id: str,
        payloads: list[bytes],
        direct: tuple[int, int, int] | None = None,
        deadline_ms: int = 0,
    ) -> list:
        """Stage `payloads` if the job still runs (drop notices if it is being stopped); with
        `direct` (the model's high and low watermarks, requests per batch-lane entry), send first
        what its lane stream may take now, as the feed would. A job with a deadline has its queue
        served ahead of the lane's others (services/dispatcher/lua/feed.lua)."""
        k = self.k
        op = [
            "q",
            self._key(k.staging_queue(model, lane, job_id)),
            self._key(k.staging_ring(model, lane)),
            self._key(k.flow(model)),
            self._key(k.job(job_id)),
            lane,
            [luapack.lua_bytes(p) for p in payloads],
        ]
        if direct is not None:
            interactive, batch = k.model_streams(model)
            op.append([self._key(interactive), self._key(batch), *direct])
        else:
            op.append(False)
        if deadline_ms:
            op += [self._key(k.urgent_queues(model, lane)), deadline_ms]
        return op

    def append(self, stream: str, fields: dict[str, bytes | str]) -> list:
        """Append one entry to `stream`."""
        flat: list = []
        for name, value in fields.items():
            flat += (name, luapack.lua_bytes(value) if isinstance(value, bytes) else value)
        return ["f", self._key(stream), flat]

    def result(self, payload: bytes) -> list:
        return self.append(self.k.results_stream, {PAYLOAD_FIELD: payload})

    def drop(self, payload: bytes, reason: str) -> list:
        return self.append(self.k.results_stream, {DROP_FIELD: payload, REASON_FIELD: reason})


class Admit:
    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, __name__, "admit")

    async def __call__(self, batch: AdmitBatch) -> tuple[int, int]:
        """Returns (requests admitted, of which staged; the others went straight to their lane stream)."""
        args: list[EncodableT] = [
            ROUTER_GROUP,
            DROP_FIELD,
            REASON_FIELD,
            luapack.pack(batch.entries),
            WORKER_GROUP,
            PAYLOAD_FIELD,
        ]
        admitted, staged = await self._script(keys=batch.keys, args=args)
        return int(admitted), int(staged)


class Feed:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.k = keys
        self._script = scripts.register(r, __name__, "feed")

    async def __call__(
        self,
        *,
        model: str,
        high_watermark: int,
        low_watermark: int,
        max_move: int,
        quantum: int,
        batch_bundle: int = 1,
        client=None,
    ):
        """(interactive moved, batch moved, paused 0/1, staging queues waiting); with a pipeline as
        `client`, queued there and answered by its execute()."""
        k = self.k
        keys = [
            *k.model_streams(model),
            *(k.staging_ring(model, lane) for lane in LANES),
            k.flow(model),
            *(k.urgent_queues(model, lane) for lane in LANES),
        ]
        args: list[EncodableT] = [
            WORKER_GROUP,
            PAYLOAD_FIELD,
            high_watermark,
            low_watermark,
            max_move,
            quantum,
            batch_bundle,
        ]
        return await self._script(keys=keys, args=args, client=client)
