"""Publishes what became of requests: one Lua call acknowledges a batch of model-stream entries and
appends, for each, its result (or a drop notice, or a dead letter), so nothing is published
without its ack nor acked without what it produced."""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from shared import luapack, stream_scripts
from shared.keys import Keys


class Outcome(msgspec.Struct, array_like=True):
    """What to publish for one model-stream entry."""

    lane: int  # index into Keys.model_streams
    entry_id: bytes
    result: bytes = b""  # encoded ResultEnvelope
    dropped: bytes = b""  # the request, ended without running (the collector writes its line)
    reason: str = ""  # why it was dropped
    dead: bytes = b""  # the request, to keep in the dead-letter stream
    dead_meta: bytes = b""


class ResultPublisher:
    def __init__(self, r: aioredis.Redis, keys: Keys, model: str) -> None:
        self.r = r
        self.streams = keys.model_streams(model)
        self.results_stream, self.dead_letter_stream = keys.results_stream, keys.dead_letter_stream
        self._publish = stream_scripts.Publish(r)
        self._hand_back = stream_scripts.HandBack(r)

    async def publish(self, batch: list[Outcome]) -> int:
        b = luapack.lua_bytes
        outcomes = [
            (o.lane + 1, b(o.entry_id), b(o.result), b(o.dropped), o.reason, b(o.dead), b(o.dead_meta)) for o in batch
        ]
        return await self._publish(
            streams=self.streams,
            results_stream=self.results_stream,
            dead_letter_stream=self.dead_letter_stream,
            outcomes=outcomes,
        )

    async def hand_back(self, lane: int, entries: list[tuple[bytes, bytes]]) -> int:
        """Return unfinished requests to their lane stream (a stopping worker does this)."""
        return await self._hand_back(stream=self.streams[lane], entries=entries)
