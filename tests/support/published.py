"""What workers published to the results stream, one envelope per result: a worker's batch entry
(field `b`) holds many, the router's failed request (field `d`) one; drop notices are left out."""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from shared.redis.keys import BUNDLE_FIELD, PAYLOAD_FIELD, Keys
from shared.wire.api import ResultLine
from shared.wire.messages import ResultEnvelope, bundle_decoder, result_decoder

_line_decoder = msgspec.json.Decoder(ResultLine)


def envelopes(entries) -> list[ResultEnvelope]:
    out: list[ResultEnvelope] = []
    for _, fields in entries:
        if BUNDLE_FIELD.encode() in fields:
            for rec in bundle_decoder.decode(fields[BUNDLE_FIELD.encode()]):
                out.append(ResultEnvelope(rec.job_id, _line_decoder.decode(rec.line), rec.busy_us, rec.cost_micros))
        elif PAYLOAD_FIELD.encode() in fields:
            out.append(result_decoder.decode(fields[PAYLOAD_FIELD.encode()]))
    return out


async def published_results(r: aioredis.Redis, keys: Keys) -> list[ResultEnvelope]:
    """Every result in the results stream, oldest first."""
    return envelopes(await r.xrange(keys.results_stream))
