"""Router: moves requests from the ingest stream to their model's stream.

Each ingest entry is one chunk of a job's requests. One Lua call per read batch acknowledges each
chunk and appends its requests to the model streams; the appends happen only if the XACK removed
the entry from the pending list, so a chunk delivered twice (after a reclaim) is routed once.
"""

from __future__ import annotations

import logging

import msgspec
import redis.asyncio as aioredis

from services.dispatcher.consumer import BatchConsumer
from shared.api import ErrorInfo, ResultLine, Timings, Usage
from shared.keys import PAYLOAD_FIELD, ROUTER_GROUP, Keys
from shared.messages import ResultEnvelope, chunk_decoder, request_decoder
from shared.models_config import ModelsConfig

log = logging.getLogger("inferq.router")

_ROUTE = """
-- KEYS[1] ingest stream, KEYS[2..] destination streams.
-- ARGV[1] group, then per ingest entry: id, n, and n (destination key index, payload) pairs.
local group = ARGV[1]
local field = ARGV[2]
local i = 3
local routed = 0
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local fresh = redis.call('XACK', KEYS[1], group, id) == 1
  for _ = 1, n do
    if fresh then
      redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', field, ARGV[i + 1])
      routed = routed + 1
    end
    i = i + 2
  end
end
return routed
"""

_results_encoder = msgspec.msgpack.Encoder()


class Router(BatchConsumer):
    role = "router"

    def __init__(self, r: aioredis.Redis, keys: Keys, models: ModelsConfig, *, count: int = 8, **kw) -> None:
        super().__init__(r, keys.ingest_stream, ROUTER_GROUP, count=count, **kw)
        self.keys = keys
        self.models = models
        self.routed = 0
        self._script = r.register_script(_ROUTE)

    async def handle(self, entries) -> None:
        keys = [self.keys.ingest_stream, self.keys.results_stream, self.keys.dead_letter_stream]
        slot: dict[str, int] = {}
        args: list[bytes | str | int] = [ROUTER_GROUP, PAYLOAD_FIELD]
        for entry_id, fields in entries:
            raw = fields.get(PAYLOAD_FIELD.encode(), b"")
            try:
                chunk = chunk_decoder.decode(raw)
            except msgspec.DecodeError:
                log.error("undecodable ingest entry %s moved to the dead-letter stream", entry_id)
                args += (entry_id, 1, 3, raw)
                continue
            args += (entry_id, len(chunk.items))
            for model, payload in chunk.items:
                if model in self.models.models:
                    index = slot.get(model)
                    if index is None:
                        keys.append(self.keys.model_stream(model))
                        index = slot[model] = len(keys)
                    args += (index, payload)
                else:
                    args += (2, _unknown_model_result(chunk.job_id, payload))
        self.routed += int(await self._script(keys=keys, args=args))


def _unknown_model_result(job_id: str, payload: bytes) -> bytes:
    """A model removed from the models file after its job was accepted: fail the request visibly
    instead of leaving it in a stream nobody reads."""
    req = request_decoder.decode(payload)
    line = ResultLine(
        custom_id=req.custom_id, request_id=req.request_id, model=req.model, status="failed", output=None,
        usage=Usage(), timings=Timings(queued_ms=0.0, inference_ms=0.0),
        error=ErrorInfo(code="model_not_found", message=f"model {req.model!r} is no longer configured"),
    )
    return _results_encoder.encode(ResultEnvelope(job_id, line))
