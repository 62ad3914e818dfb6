"""Publishes finished results: one Lua call acknowledges a batch of model-stream entries and appends
their results, so a result is never published without its ack nor acked without its result."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.keys import PAYLOAD_FIELD, WORKER_GROUP, Keys

_PUBLISH = """
-- KEYS[1] model stream, KEYS[2] results stream. ARGV[1] group, ARGV[2] field, then (entry id, result) pairs.
-- A result whose entry is no longer pending here (another worker reclaimed and finished it) is dropped.
local published = 0
for i = 3, #ARGV, 2 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[i + 1])
    published = published + 1
  end
end
return published
"""


class ResultPublisher:
    def __init__(self, r: aioredis.Redis, keys: Keys, model: str) -> None:
        self.r = r
        self.keys = [keys.model_stream(model), keys.results_stream]
        self.dead_letter_stream = keys.dead_letter_stream
        self._script = r.register_script(_PUBLISH)

    async def publish(self, batch: list[tuple[bytes, bytes]]) -> int:
        args: list[bytes | str] = [WORKER_GROUP, PAYLOAD_FIELD]
        for entry_id, payload in batch:
            args += (entry_id, payload)
        return int(await self._script(keys=self.keys, args=args))

    async def dead_letter(self, entry_id: bytes, raw: bytes) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_letter_stream, {PAYLOAD_FIELD: raw, "source": self.keys[0]})
            pipe.xack(self.keys[0], WORKER_GROUP, entry_id)
            await pipe.execute()
