"""A sink's cursor on the events stream (lua/read.lua, lua/advance.lua, lua/fail.lua): read the
next events, then move past them once the sink acknowledged them. Every step checks the sink's
lease, so only one dispatcher delivers to a sink, in stream order."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.redis import scripts
from shared.redis.keys import Keys
from shared.redis.streams import Entry


@dataclass(frozen=True)
class Batch:
    cursor: str  # where it was read from
    lost: int  # entries the stream trimmed before this sink read them
    entries: list[Entry]
    reset: bool = False  # the stream started again (deleted, or restored to an older state)


class SinkCursor:
    def __init__(self, r: aioredis.Redis, keys: Keys, name: str, holder: str, *, start: str) -> None:
        self.keys, self.name, self.holder, self.start = keys, name, holder, start
        self._sink, self._lease = keys.sink(name), keys.sink_lease(name)
        self._read = scripts.register(r, __name__, "read")
        self._advance = scripts.register(r, __name__, "advance")
        self._fail = scripts.register(r, __name__, "fail")

    async def read(self, count: int) -> Batch | None:
        """The next `count` entries after the cursor; None when another dispatcher holds the lease."""
        reply = await self._read(
            keys=[self._sink, self.keys.events_stream, self._lease], args=[self.holder, count, self.start]
        )
        if not reply[0]:
            return None
        return Batch(
            cursor=reply[1].decode(), lost=int(reply[2]), entries=[_entry(e) for e in reply[3]], reset=bool(reply[4])
        )

    async def advance(self, batch: Batch, *, delivered: int, rejected: int) -> bool:
        """Move past the whole batch; False when the lease or the cursor changed meanwhile (the
        batch is read again by whoever holds the sink now)."""
        to = batch.entries[-1][0].decode() if batch.entries else batch.cursor
        moved = await self._advance(
            keys=[self._sink, self._lease],
            args=[
                self.holder,
                batch.cursor,
                to,
                len(batch.entries) + batch.lost,
                delivered,
                batch.lost,
                rejected,
                int(time.time() * 1000),
            ],
        )
        return int(moved) == 1

    async def failed(self, error: str) -> None:
        await self._fail(keys=[self._sink, self._lease], args=[self.holder, error[:500], int(time.time() * 1000)])


def _entry(raw) -> Entry:
    """XRANGE's reply in a script comes back as [id, [field, value, ...]]."""
    entry_id, flat = raw
    return entry_id, {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
