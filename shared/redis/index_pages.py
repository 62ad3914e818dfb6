"""Reading a page from sorted-set indexes (score = creation time, ties in member order), after a
cursor that is the last member of the previous page.

Paging is by position, not by rank: the page after a cursor holds the members that sort after
(score, member) of the cursor, so items added or removed meanwhile never make a page repeat or
skip one. A cursor whose member has left the index (the item was deleted) is placed by its id
alone when ids are time-ordered (`id_position`): what follows is what sorts after it by id, looked
for from a score a second wider than its own. Members whose item is
gone are dropped from the index as they are met, and the walk goes on until the page is full, so
a page is short only when it is the last.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis

from shared.core.ids import created_ms

T = TypeVar("T")

Position = tuple[float, str]


async def start_at(
    r: aioredis.Redis, index: str, after: str | None, *, newest_first: bool
) -> tuple[Position | None, bool]:
    """Where a walk after the time-ordered id `after` starts, and whether by id: at its member, or,
    once that was deleted, at its `id_position`."""
    if after is None:
        return None, False
    score = await r.zscore(index, after)
    if score is not None:
        return (float(score), after), False
    return id_position(after, newest_first=newest_first), True


def id_position(ident: str, *, newest_first: bool) -> Position:
    """Where the time-ordered id of a deleted item sat in an index scored by creation second: its
    own second, widened by one in the direction of the walk (a record's `created_at` and the time in
    its id are read moments apart)."""
    second = created_ms(ident) // 1000
    return (float(second + 1 if newest_first else second - 1), ident)


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
    by_id: bool = False,
    want: int,
    newest_first: bool,
    load: Callable[[list[str]], Awaitable[Sequence[T | None]]],
) -> list[T]:
    """Up to `want` items after `after` (None: from the start), merged from `indexes` (whose
    members are distinct) in order; `load` returns each member's item, or None if it is gone.
    `by_id`: `after` is an `id_position`, and only members past its id follow."""
    found: list[T] = []
    position = after
    past = after[1] if by_id and after is not None else None
    while len(found) < want:
        asked = want - len(found)
        candidates = await _candidates(r, indexes, position, asked, newest_first)
        if not candidates:
            break
        members = [m for _, m in candidates if past is None or (m < past if newest_first else m > past)]
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
        score, member = after
        pairs = [p for p in pairs if p[0] != score or (p[1] < member if newest_first else p[1] > member)]
    pairs.sort(reverse=newest_first)
    return pairs[:count]
