"""Publishes finished results: one Lua call acknowledges a batch of model-stream entries and appends
their results, so a result is never published without its ack nor acked without its result."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.keys import PAYLOAD_FIELD, WORKER_GROUP, Keys
from shared.streams import dead_letter

_PUBLISH = """
-- KEYS[1..n-1] the model's lane streams, KEYS[n] results stream.
-- ARGV[1] group, ARGV[2] field, then (lane stream index, entry id, result) triples.
-- A result whose entry is no longer pending here (another worker reclaimed and finished it) is dropped.
local results = KEYS[#KEYS]
local published = 0
for i = 3, #ARGV, 3 do
  if redis.call('XACK', KEYS[tonumber(ARGV[i])], ARGV[1], ARGV[i + 1]) == 1 then
    redis.call('XADD', results, '*', ARGV[2], ARGV[i + 2])
    published = published + 1
  end
end
return published
"""

# A finished request: (lane index into Keys.model_streams, entry id, encoded ResultEnvelope).
Finished = tuple[int, bytes, bytes]


class ResultPublisher:
    def __init__(self, r: aioredis.Redis, keys: Keys, model: str) -> None:
        self.r = r
        self.streams = keys.model_streams(model)
        self.keys = [*self.streams, keys.results_stream]
        self.dead_letter_stream = keys.dead_letter_stream
        self._script = r.register_script(_PUBLISH)

    async def publish(self, batch: list[Finished]) -> int:
        args: list[bytes | str | int] = [WORKER_GROUP, PAYLOAD_FIELD]
        for lane, entry_id, payload in batch:
            args += (lane + 1, entry_id, payload)
        return int(await self._script(keys=self.keys, args=args))

    async def dead_letter(self, lane: int, entry_id: bytes, raw: bytes) -> None:
        await dead_letter(self.r, self.streams[lane], WORKER_GROUP, entry_id, raw, self.dead_letter_stream, PAYLOAD_FIELD)
