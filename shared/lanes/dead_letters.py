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
from redis.typing import EncodableT

from shared.core.pages import Page, page_of
from shared.redis import scripts
from shared.redis.index_pages import read_indexes
from shared.redis.keys import META_FIELD, PAYLOAD_FIELD, JobField, Keys
from shared.wire.api import DeadLetter

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)


class DeadLetterScript:
    """lua/dead_letter.lua: acknowledge an entry and keep it in the dead letters, in one step."""

    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, __name__, "dead_letter")

    async def __call__(
        self, *, stream: str, group: str, entry_id: bytes, dead_letter_stream: str, payload: bytes, meta: bytes
    ) -> bool:
        """Whether the entry was still held by `group` and moved."""
        args: list[EncodableT] = [group, entry_id, PAYLOAD_FIELD, payload, META_FIELD, meta]
        return bool(await self._script(keys=[stream, dead_letter_stream], args=args))


class TrimDeadLetters:
    """lua/trim_dead_letters.lua: the retention of the dead letters and of their indexes."""

    def __init__(self, r: aioredis.Redis) -> None:
        self._script = scripts.register(r, __name__, "trim_dead_letters")

    async def __call__(
        self,
        *,
        stream: str,
        dropped: str,
        tenants: str,
        unattributed: str,
        indexes: dict[str, str],
        min_id: str,
        maxlen: int,
    ) -> tuple[int, int, int]:
        """(removed by age, removed by count, entries kept); `indexes`: tenant -> its index."""
        names = list(indexes)
        by_age, by_count, kept = await self._script(
            keys=[stream, dropped, tenants, unattributed, *(indexes[t] for t in names)], args=[min_id, maxlen, *names]
        )
        return int(by_age), int(by_count), int(kept)


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
    """Drop dead letters older than `max_age_s`, then the oldest beyond `maxlen`, counting them,
    and the indexes' members of what was dropped."""
    await index_new(r, keys)
    tenants = sorted(t.decode() for t in await r.smembers(keys.dead_letter_tenants))  # type: ignore[misc]
    trim = TrimDeadLetters(r)
    by_age, by_count, kept = await trim(
        stream=keys.dead_letter_stream,
        dropped=keys.dead_letters_dropped,
        tenants=keys.dead_letter_tenants,
        unattributed=keys.dead_letters_unattributed,
        indexes={t: keys.dead_letter_index(t) for t in tenants},
        min_id=f"{max(0, now_ms - max_age_s * 1000)}-0",
        maxlen=maxlen,
    )
    return Retention(dropped_by_age=by_age, dropped_by_count=by_count, kept=kept)


async def list_dead_letters(r: aioredis.Redis, keys: Keys, after: str | None, limit: int) -> Page[DeadLetter]:
    """Every tenant's dead letters, oldest first: the operator's view of the whole stream."""
    start = f"({after}" if after else "-"
    entries = await r.xrange(keys.dead_letter_stream, min=start, max="+", count=limit + 1)
    return page_of([_read(entry_id, fields) for entry_id, fields in entries], limit, _id)


async def tenant_dead_letters(
    r: aioredis.Redis, keys: Keys, tenant: str, *, unattributed: bool, after: str | None, limit: int
) -> Page[DeadLetter]:
    """A tenant's dead letters, oldest first, read from its index (so another tenant's never make
    a page short); with `unattributed`, also those that name no job or endpoint still known."""
    await index_new(r, keys)
    indexes = [keys.dead_letter_index(tenant)] + ([keys.dead_letters_unattributed] if unattributed else [])

    async def load(members: list[str]) -> list[DeadLetter | None]:
        pipe = r.pipeline(transaction=False)
        for member in members:
            entry_id = _entry_id(member)
            pipe.xrange(keys.dead_letter_stream, min=entry_id, max=entry_id, count=1)
        return [_read(*found[0]) if found else None for found in await pipe.execute()]

    position = None if after is None else (float(_ms(after)), _member(after))
    found = await read_indexes(r, indexes, after=position, want=limit + 1, newest_first=False, load=load)
    return page_of(found, limit, _id)


async def index_new(r: aioredis.Redis, keys: Keys, batch: int = 1000) -> int:
    """Add the dead letters written since the last call to the index of the tenant they belong to
    (that of their job or webhook endpoint). Run before each listing and by the retention cron, so a
    listing sees every dead letter written before it. Indexing an entry twice changes nothing."""
    mark = await r.get(keys.dead_letters_indexed)
    start = f"({mark.decode()}" if mark else "-"
    indexed = 0
    while True:
        entries = await r.xrange(keys.dead_letter_stream, min=start, max="+", count=batch)
        if not entries:
            return indexed
        infos = [_read(entry_id, fields) for entry_id, fields in entries]
        owners = await _owners(r, keys, infos)
        pipe = r.pipeline(transaction=True)  # a tenant and its index appear together, for the trim
        for info, owner in zip(infos, owners):
            if owner is None:
                pipe.zadd(keys.dead_letters_unattributed, {_member(info.id): _ms(info.id)})
            else:
                pipe.sadd(keys.dead_letter_tenants, owner)
                pipe.zadd(keys.dead_letter_index(owner), {_member(info.id): _ms(info.id)})
        pipe.set(keys.dead_letters_indexed, infos[-1].id)
        await pipe.execute()
        indexed += len(infos)
        if len(entries) < batch:
            return indexed
        start = f"({infos[-1].id}"


class _Owned(msgspec.Struct):
    tenant: str


_owned = msgspec.json.Decoder(_Owned)


async def _owners(r: aioredis.Redis, keys: Keys, infos: list[DeadLetter]) -> list[str | None]:
    """The tenant of each dead letter's job, else of its webhook endpoint; None when neither exists."""
    pipe = r.pipeline(transaction=False)
    for info in infos:
        pipe.hget(keys.job(info.job_id or "-"), JobField.TENANT)
        pipe.get(keys.webhook(info.webhook_id or "-"))
    replies = await pipe.execute()
    owners: list[str | None] = []
    for info, job_tenant, endpoint in zip(infos, replies[::2], replies[1::2]):
        if info.job_id and job_tenant:
            owners.append(job_tenant.decode())
        elif info.webhook_id and endpoint:
            try:
                owners.append(_owned.decode(endpoint).tenant)
            except msgspec.DecodeError:
                owners.append(None)
        else:
            owners.append(None)
    return owners


def _id(info: DeadLetter) -> str:
    return info.id or ""


def _ms(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


def _member(entry_id: str) -> str:
    """Index member of an entry id: both parts zero-padded, so members sort as entry ids do."""
    ms, seq = entry_id.split("-")
    return f"{int(ms):020d}-{int(seq):020d}"


def _entry_id(member: str) -> str:
    ms, seq = member.split("-")
    return f"{int(ms)}-{int(seq)}"


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
