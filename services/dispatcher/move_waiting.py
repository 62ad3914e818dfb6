"""Wrapper of services/dispatcher/lua/move_waiting.lua: moves a model's waiting requests to the next model of a
fallback chain (or ends them), one atomic step per call."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.typing import EncodableT

from shared.redis import luapack, scripts
from shared.redis.keys import DROP_FIELD, LANES, PAYLOAD_FIELD, REASON_FIELD, WORKER_GROUP, Keys


class MoveBatch:
    """The requests one call takes from `model`: stream entries by id, staging queue heads."""

    def __init__(self, keys: Keys, model: str, to: str | None) -> None:
        self.k = keys
        self.model = model
        self.to = to  # None: end the requests instead
        self._keys = luapack.KeyList([*keys.model_streams(model), keys.results_stream, keys.fallback_moves])
        self._key = self._keys.index
        self.ops: list[list] = []

    @property
    def keys(self) -> list[str]:
        return self._keys.keys

    def _target(self, lane: str, job_id: str) -> list[int]:
        if self.to is None:
            return [0, 0, 0]
        k = self.k
        return [
            self._key(k.staging_queue(self.to, lane, job_id)),
            self._key(k.staging_ring(self.to, lane)),
            self._key(k.flow(self.to)),
        ]

    def entry(self, lane: str, entry_id: bytes | str, job_id: str) -> None:
        """Take one routed entry, if no worker has read it yet."""
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        self.ops.append(["s", LANES.index(lane) + 1, eid, self._key(self.k.job(job_id)), *self._target(lane, job_id)])

    def queue(self, lane: str, job_id: str, *, most: int, ahead: int = 0, ms_each: float | None = None) -> None:
        """Take up to `most` requests from the head of the job's staging queue: all of them when
        `ms_each` is None, else only the overdue ones (waited + `ahead`+i requests at `ms_each`)."""
        k = self.k
        self.ops.append(
            [
                "q",
                self._key(k.job(job_id)),
                self._key(k.staging_queue(self.model, lane, job_id)),
                self._key(k.staging_ring(self.model, lane)),
                self._key(k.flow(self.model)),
                lane,
                *self._target(lane, job_id),
                most,
                ahead,
                -1 if ms_each is None else int(ms_each),
            ]
        )


class MoveWaiting:
    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, __name__, "move_waiting")

    async def __call__(self, batch: MoveBatch, *, reason: str, now_ms: int) -> tuple[int, int]:
        """(moved, ended)."""
        if not batch.ops:
            return 0, 0
        args: list[EncodableT] = [
            WORKER_GROUP,
            PAYLOAD_FIELD,
            DROP_FIELD,
            REASON_FIELD,
            reason,
            now_ms,
            luapack.pack(batch.ops),
            batch.model,
            batch.to or "",
        ]
        moved, ended = await self._script(keys=batch.keys, args=args)
        return int(moved), int(ended)
