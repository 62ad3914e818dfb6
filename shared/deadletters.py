"""The dead-letter stream: messages no consumer could process, kept with why, for an operator.

Each entry holds the original message bytes (`d`) and a DeadLetter record as JSON (`m`). A request
that is dead-lettered also gets a `failed` result (`max_attempts_exceeded`), so its job finishes;
an operator can requeue it, which undoes that failure (see JobStore.requeue). Entries are kept
for a bounded age and number (`apply_retention`, run by the dispatcher's upkeep cron); what
retention drops is counted in Redis, so any process's /metrics can report it.
"""

from __future__ import annotations

import time

import msgspec
import redis.asyncio as aioredis

from shared.api import DeadLetter, DeadLetterList
from shared.keys import META_FIELD, PAYLOAD_FIELD, Keys
from shared.stream_scripts import DeadLetter as DeadLetterScript
from shared.stream_scripts import TrimDeadLetters

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)


def meta(info: DeadLetter) -> bytes:
    if not info.at:
        info.at = int(time.time())
    return _encoder.encode(info)


async def dead_letter(
    r: aioredis.Redis, keys: Keys, stream: str, group: str, entry_id: bytes, raw: bytes, info: DeadLetter
) -> bool:
    """Acknowledge an entry nobody can process and keep it for an operator, in one step."""
    move = DeadLetterScript(r)
    return await move(
        stream=stream,
        group=group,
        entry_id=entry_id,
        dead_letter_stream=keys.dead_letter_stream,
        payload=raw,
        meta=meta(info),
    )


class Retention(msgspec.Struct, frozen=True):
    """What one retention pass did."""

    dropped_by_age: int
    dropped_by_count: int
    kept: int


async def apply_retention(r: aioredis.Redis, keys: Keys, *, max_age_s: int, maxlen: int, now_ms: int) -> Retention:
    """Drop dead letters older than `max_age_s`, then the oldest beyond `maxlen`, counting them."""
    trim = TrimDeadLetters(r)
    by_age, by_count, kept = await trim(
        stream=keys.dead_letter_stream,
        dropped=keys.dead_letters_dropped,
        min_id=f"{max(0, now_ms - max_age_s * 1000)}-0",
        maxlen=maxlen,
    )
    return Retention(dropped_by_age=by_age, dropped_by_count=by_count, kept=kept)


async def list_dead_letters(r: aioredis.Redis, keys: Keys, after: str | None, limit: int) -> DeadLetterList:
    start = f"({after}" if after else "-"
    entries = await r.xrange(keys.dead_letter_stream, min=start, max="+", count=limit)
    data = [_read(entry_id, fields) for entry_id, fields in entries]
    return DeadLetterList(data=data, next_cursor=data[-1].id if len(data) == limit else None)


async def get_dead_letter(r: aioredis.Redis, keys: Keys, dead_id: str) -> tuple[DeadLetter, bytes] | None:
    entries = await r.xrange(keys.dead_letter_stream, min=dead_id, max=dead_id, count=1)
    if not entries:
        return None
    entry_id, fields = entries[0]
    return _read(entry_id, fields), fields.get(PAYLOAD_FIELD.encode(), b"")


def _read(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    try:
        info = _decoder.decode(fields.get(META_FIELD.encode(), b""))
    except msgspec.DecodeError:
        info = DeadLetter(source=fields.get(b"source", b"?").decode(), reason="unknown")
    info.id = entry_id.decode()
    return info
