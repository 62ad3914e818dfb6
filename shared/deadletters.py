"""The dead-letter stream: messages no consumer could process, kept with why, for an operator.

Each entry holds the original message bytes (`d`) and a DeadLetter record as JSON (`m`). A request
that is dead-lettered also gets a `failed` result (`max_attempts_exceeded`), so its job finishes;
an operator can requeue it, which undoes that failure (see JobStore.requeue).
"""

from __future__ import annotations

import time

import msgspec
import redis.asyncio as aioredis

from shared.api import DeadLetter, DeadLetterList
from shared.keys import PAYLOAD_FIELD, Keys

META_FIELD = "m"

_DEAD_LETTER = """
-- Move an entry to the dead-letter stream, only if this consumer still held it.
-- KEYS[1] source stream, KEYS[2] dead-letter stream. ARGV: group, entry id, payload field, payload, meta field, meta.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XADD', KEYS[2], '*', ARGV[3], ARGV[4], ARGV[5], ARGV[6])
  return 1
end
return 0
"""

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
    return bool(await r.eval(_DEAD_LETTER, 2, stream, keys.dead_letter_stream, group, entry_id,
                             PAYLOAD_FIELD, raw, META_FIELD, meta(info)))


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
