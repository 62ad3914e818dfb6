"""Publishes what became of requests: one Lua call acknowledges a batch of model-stream entries and
appends, for each, its result (or a drop notice, or a dead letter), so nothing is published
without its ack nor acked without what it produced."""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from shared.lanes.publish import HandBack, Publish
from shared.redis import luapack
from shared.redis.keys import Keys


class Outcome(msgspec.Struct, array_like=True):
    """What to publish for one model-stream entry."""

    lane: int  # index into Keys.model_streams
    entry_id: bytes
    result: bytes = b""  # encoded ResultRecord
    dropped: bytes = b""  # the request, ended without running (the collector writes its line)
    reason: str = ""  # why it was dropped
    dead: bytes = b""  # the request, to keep in the dead-letter stream
    dead_meta: bytes = b""
    # the request moved to the next model of its fallback chain ([reason, request]), and where to:
    # (model, lane name, job id)
    moved: bytes = b""
    moved_to: tuple[str, str, str] | None = None


# the results of a batch as one msgpack array, each record spliced in as already encoded
_results_encoder = msgspec.msgpack.Encoder()


class ResultPublisher:
    def __init__(self, r: aioredis.Redis, keys: Keys, model: str) -> None:
        self.r = r
        self.keys = keys
        self.model = model
        self.streams = keys.model_streams(model)
        self.results_stream, self.dead_letter_stream = keys.results_stream, keys.dead_letter_stream
        self._publish = Publish(r)
        self._hand_back = HandBack(r)

    async def publish(self, batch: list[Outcome]) -> int:
        b = luapack.lua_bytes
        k = self.keys
        first = len(self.streams) + 4  # KEYS index of the first move key
        move_keys: list[str] = []
        outcomes = []
        results = []
        for o in batch:
            if o.result:
                results.append(msgspec.Raw(o.result))
            if not (o.dropped or o.dead or o.moved):  # a result alone: the rest of the row is left out
                outcomes.append((o.lane + 1, b(o.entry_id), len(o.result)))
                continue
            row: list = [o.lane + 1, b(o.entry_id), len(o.result), b(o.dropped), o.reason, b(o.dead), b(o.dead_meta)]
            if o.moved_to is None:
                row.append(b(b""))
            else:
                to, lane, job_id = o.moved_to
                at = first + len(move_keys)
                move_keys += [k.staging_queue(to, lane, job_id), k.staging_ring(to, lane), k.flow(to)]
                row += [b(o.moved), at, at + 1, at + 2, lane, f"{self.model} {to} retries_exhausted"]
            outcomes.append(tuple(row))
        return await self._publish(
            streams=self.streams,
            results_stream=self.results_stream,
            dead_letter_stream=self.dead_letter_stream,
            moves_counter=k.fallback_moves,
            outcomes=outcomes,
            results=_results_encoder.encode(results),
            move_keys=move_keys,
        )

    async def hand_back(
        self, lane: int, entries: list[tuple[bytes, list[bytes]]], delivered: dict[bytes, int] | None = None
    ) -> int:
        """Return entries' requests to their lane stream, one entry each: the unfinished ones of a
        stopping worker, or a bundle delivered again (split up, each carrying its deliveries)."""
        return await self._hand_back(stream=self.streams[lane], entries=entries, delivered=delivered)
