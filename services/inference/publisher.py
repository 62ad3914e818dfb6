"""Publishes what became of requests: one Lua call acknowledges a batch of model-stream entries and
appends, for each, its result (or a drop notice, or a dead letter), so nothing is published
without its ack nor acked without what it produced."""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from shared import luapack
from shared.deadletters import META_FIELD
from shared.keys import DROP_FIELD, PAYLOAD_FIELD, REASON_FIELD, WORKER_GROUP, Keys

_PUBLISH = """
-- KEYS: the model's lane streams..., results stream, dead-letter stream.
-- ARGV: group, payload field, drop field, reason field, meta field, then msgpack: a list of
--   (lane stream index, entry id, result ('' none), dropped request ('' none), drop reason,
--    dead-letter payload ('' none), dead-letter meta) per entry.
-- Nothing happens for an entry that is no longer pending here (another worker reclaimed it).
local results, dead = KEYS[#KEYS - 1], KEYS[#KEYS]
local group, pf, xf, rf, mf = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local outcomes = cmsgpack.unpack(ARGV[6])
local published = 0
for i = 1, #outcomes do
  local o = outcomes[i]
  if redis.call('XACK', KEYS[o[1]], group, o[2]) == 1 then
    if o[3] ~= '' then redis.call('XADD', results, '*', pf, o[3]) end
    if o[4] ~= '' then redis.call('XADD', results, '*', xf, o[4], rf, o[5]) end
    if o[6] ~= '' then redis.call('XADD', dead, '*', pf, o[6], mf, o[7]) end
    published = published + 1
  end
end
return published
"""


class Outcome(msgspec.Struct, array_like=True):
    """What to publish for one model-stream entry."""

    lane: int  # index into Keys.model_streams
    entry_id: bytes
    result: bytes = b""  # encoded ResultEnvelope
    dropped: bytes = b""  # the request, ended without running (the collector writes its line)
    reason: str = ""  # why it was dropped
    dead: bytes = b""  # the request, to keep in the dead-letter stream
    dead_meta: bytes = b""


_HAND_BACK = """
-- Give entries back to the group as new, unread entries (same payload), so any worker takes them
-- at once instead of waiting for a reclaim. KEYS[1] lane stream. ARGV: group, field, (id, payload) pairs.
local n = 0
for i = 3, #ARGV, 2 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[i + 1])
    n = n + 1
  end
end
return n
"""


class ResultPublisher:
    def __init__(self, r: aioredis.Redis, keys: Keys, model: str) -> None:
        self.r = r
        self.streams = keys.model_streams(model)
        self.keys = [*self.streams, keys.results_stream, keys.dead_letter_stream]
        self._script = r.register_script(_PUBLISH)
        self._hand_back = r.register_script(_HAND_BACK)

    async def publish(self, batch: list[Outcome]) -> int:
        b = luapack.lua_bytes
        outcomes = [(o.lane + 1, b(o.entry_id), b(o.result), b(o.dropped), o.reason, b(o.dead), b(o.dead_meta))
                    for o in batch]
        args = [WORKER_GROUP, PAYLOAD_FIELD, DROP_FIELD, REASON_FIELD, META_FIELD, luapack.pack(outcomes)]
        return int(await self._script(keys=self.keys, args=args))

    async def hand_back(self, lane: int, entries: list[tuple[bytes, bytes]]) -> int:
        """Return unfinished requests to their lane stream (a stopping worker does this)."""
        args: list[bytes | str] = [WORKER_GROUP, PAYLOAD_FIELD]
        for entry_id, payload in entries:
            args += (entry_id, payload)
        return int(await self._hand_back(keys=[self.streams[lane]], args=args))
