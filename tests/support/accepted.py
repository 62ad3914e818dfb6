"""What job creation wrote: requests sent straight to a model stream, and ingest chunks for the
router (less the requests their entry says were sent straight already)."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.redis.keys import PAYLOAD_FIELD, SKIP_FIELD, Keys
from shared.wire.messages import InferenceRequest, chunk_decoder, decode_routed


async def _model_streams(r: aioredis.Redis, keys: Keys) -> list[bytes]:
    return [s async for s in r.scan_iter(match=keys.model_stream("*", "*"), _type="stream")]


async def accepted(r: aioredis.Redis, keys: Keys) -> list[InferenceRequest]:
    """Every request written, in request order (by its index in the job)."""
    payloads = [f[PAYLOAD_FIELD.encode()] for s in await _model_streams(r, keys) for _, f in await r.xrange(s)]
    for _, f in await r.xrange(keys.ingest_stream):
        items = chunk_decoder.decode(f[PAYLOAD_FIELD.encode()]).items
        payloads += [p for _, _, p in items[int(f.get(SKIP_FIELD.encode(), 0)) :]]
    reqs = [decode_routed(p)[0] for p in payloads]
    return sorted(reqs, key=lambda q: (q.job_id, int(q.request_id.rsplit("_", 1)[1])))


async def entries_written(r: aioredis.Redis, keys: Keys) -> int:
    """Entries in the ingest stream and every model stream."""
    return await r.xlen(keys.ingest_stream) + sum([await r.xlen(s) for s in await _model_streams(r, keys)])
