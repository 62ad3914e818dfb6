"""Reading a page from sorted-set indexes (score = creation time, ties in member order), after a
cursor that is the last member of the previous page.

Paging is by position, not by rank: the page after a cursor holds the members that sort after
(score, member) of the cursor, so items added or removed meanwhile never make a page repeat or
skip one. A cursor whose member has left the index (the item was deleted) is placed by a score
the caller derives from it, e.g. the creation time inside a time-ordered id. Members whose item is
gone are dropped from the index as they are met, and the walk goes on until the page is full, so
a page is short only when it is the last.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis

T = TypeVar("T")

Position = tuple[float, str]


async def cursor_position(r: aioredis.Redis, indexes: Sequence[str], member: str) -> float | None:
    """The cursor's score in whichever index holds it, or None."""
    for index in indexes:
        score = await r.zscore(index, member)
        if score is not None:
            return float(score)
    return None


async def read_indexes(
    r: aioredis.Redis,
    indexes: Sequence[str],
    *,
    after: Position | None,
    want: int,
    newest_first: bool,
    load: Callable[[list[str]], Awaitable[Sequence[T | None]]],
) -> list[T]:
    """Up to `want` items after `after` (None: from the start), merged from `indexes` (whose
    members are distinct) in order; `load` returns each member's item, or None if it is gone."""
    found: list[T] = []
    position = after
    while len(found) < want:
        asked = want - len(found)
        candidates = await _candidates(r, indexes, position, asked, newest_first)
        if not candidates:
            break
        members = [member for _, member in candidates]
        items = await load(members)
        gone = [member for member, item in zip(members, items) if item is None]
        if gone:
            for index in indexes:
                await r.zrem(index, *gone)
        found.extend(item for item in items if item is not None)
        if len(candidates) < asked:
            break
        position = candidates[-1]
    return found[:want]


async def _candidates(
    r: aioredis.Redis, indexes: Sequence[str], after: Position | None, count: int, newest_first: bool
) -> list[Position]:
    """The next `count` (score, member) pairs after `after`, over all indexes, in order."""
    pipe = r.pipeline(transaction=False)
    for index in indexes:
        if after is None:
            pipe.zrange(index, 0, count - 1, desc=newest_first, withscores=True)
            continue
        score = after[0]
        pipe.zrangebyscore(index, score, score, withscores=True)  # ties: few, those after the member kept
        if newest_first:
            pipe.zrevrangebyscore(index, f"({score!r}", "-inf", start=0, num=count, withscores=True)
        else:
            pipe.zrangebyscore(index, f"({score!r}", "+inf", start=0, num=count, withscores=True)
    replies = await pipe.execute()
    pairs: list[Position] = []
    for reply in replies:
        pairs.extend((float(score), member.decode()) for member, score in reply)
    if after is not None:
        pairs = [p for p in pairs if p[0] != after[0] or (p[1] < after[1] if newest_first else p[1] > after[1])]
    pairs.sort(reverse=newest_first)
    return pairs[:count]
