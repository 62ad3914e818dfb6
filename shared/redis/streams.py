"""Consumer-group helpers shared by every stream consumer."""

from __future__ import annotations

import os
import socket
import uuid

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared.core.errors import TRANSIENT_REDIS_ERRORS

Entry = tuple[bytes, dict[bytes, bytes]]


def consumer_name(role: str) -> str:
    """Unique per process, readable in XINFO CONSUMERS: role, host, pid and a random suffix."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def ensure_group(r: aioredis.Redis, stream: str, group: str) -> None:
    """Create the group (and the stream) if missing; reading from id 0 means nothing written
    before the first consumer started is skipped."""
    try:
        await r.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def read_new(
    r: aioredis.Redis, stream: str, group: str, consumer: str, count: int, block_ms: int | None
) -> list[Entry]:
    """New entries for this consumer; `block_ms` None (or 0) returns at once when there are none."""
    reply = await r.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms or None)
    return reply[0][1] if reply else []


async def read_own_pending(
    r: aioredis.Redis, stream: str, group: str, consumer: str, count: int, after: bytes | str = "0"
) -> tuple[list[Entry], bytes | str | None]:
    """Entries delivered to this consumer and not acknowledged, after id `after`, and where the
    next page starts (None: no more). After a lost connection they include those of a read whose
    reply never arrived, pending here without the consumer knowing. Deleted entries are left out."""
    reply = await r.xreadgroup(group, consumer, {stream: after}, count=count)
    page = reply[0][1] if reply else []
    return [e for e in page if e[1]], (page[-1][0] if len(page) >= count else None)


async def claim_idle(
    r: aioredis.Redis, stream: str, group: str, consumer: str, min_idle_ms: int, count: int = 100
) -> list[Entry]:
    """Take over entries another consumer read but did not acknowledge within `min_idle_ms`
    (it crashed or hangs). Entries deleted meanwhile are dropped by XAUTOCLAIM itself."""
    claimed: list[Entry] = []
    start = "0-0"
    while True:
        reply = await r.xautoclaim(
            stream, group, consumer, min_idle_time=min_idle_ms, start_id=start, count=count - len(claimed)
        )
        start, entries = reply[0], reply[1]
        claimed.extend(e for e in entries if e[1] is not None)
        if start in (b"0-0", "0-0") or len(claimed) >= count:
            return claimed


async def delivery_counts(
    r: aioredis.Redis, stream: str, group: str, consumer: str, ids: list[bytes]
) -> dict[bytes, int]:
    """How many times each entry (pending for `consumer`) has been delivered, reclaims included."""
    if not ids:
        return {}
    lo, hi = min(ids, key=_parse_id), max(ids, key=_parse_id)
    rows = await r.xpending_range(stream, group, min=lo, max=hi, count=len(ids) * 4 + 100, consumername=consumer)
    wanted = set(ids)
    return {row["message_id"]: int(row["times_delivered"]) for row in rows if row["message_id"] in wanted}


async def groups_of(r: aioredis.Redis, stream: str) -> list[dict]:
    """XINFO GROUPS of `stream`; none for a missing stream. Redis briefly unable is raised (for the
    caller's retry), never read as a missing stream."""
    try:
        return await r.xinfo_groups(stream)
    except ResponseError as exc:
        if isinstance(exc, TRANSIENT_REDIS_ERRORS):
            raise
        return []


async def unacknowledged(r: aioredis.Redis, stream: str, group: str) -> int:
    """Entries `group` has not acknowledged yet: unread (XINFO's lag) plus read and pending. Where
    Redis cannot tell the lag (entries deleted past the group's position), the stream's length,
    which is never less. 0 for a missing stream or group."""
    for g in await groups_of(r, stream):
        if _s(g["name"]) == group:
            lag = g.get("lag")
            if lag is None:
                return int(await r.xlen(stream))
            return int(lag) + int(g["pending"])
    return 0


async def trim_acknowledged(r: aioredis.Redis, stream: str) -> int:
    """Drop entries that every group has acknowledged; never an entry some group still needs.
    Entries are delivered in id order, so everything below a group's oldest pending entry (or up
    to its last-delivered id when nothing is pending) has been acknowledged by it."""
    groups = await groups_of(r, stream)
    if not groups:
        return 0
    floor: tuple[int, int] | None = None
    for g in groups:
        oldest = None
        if int(g["pending"]) > 0:
            oldest = (await r.xpending(stream, g["name"]))["min"]
        if oldest is not None:
            keep = _parse_id(oldest)
        else:
            ms, seq = _parse_id(g["last-delivered-id"])
            keep = (ms, seq + 1)
        floor = keep if floor is None or keep < floor else floor
    if floor is None or floor <= (0, 1):
        return 0
    # `~` trims whole nodes only (cheap); LIMIT 0 lifts the default cap of 100 nodes per call.
    return int(await r.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=True, limit=0))


def _parse_id(value) -> tuple[int, int]:
    ms, _, seq = _s(value).partition("-")
    return int(ms), int(seq or 0)


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
