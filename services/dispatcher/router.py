"""Router: admits requests from the ingest stream into per-job staging queues, and feeds each
model's streams from those queues under flow control.

Admit: one Lua call per read batch acknowledges each ingest chunk and appends its requests to the
staging queue of (model, lane, job), but only if the XACK removed the entry from the pending list,
so a chunk delivered twice (after a reclaim) is admitted once.

Feed: one Lua call per model moves requests from staging queues into the model's lane streams.
- Interactive lane first, limited only by its own stream's backlog, so it never waits for batch work.
- Batch lane with hysteresis: paused when the model's stream backlog (unread + unacknowledged, both
  lanes) reaches the high watermark, resumed below the low watermark.
- Within a lane, jobs take turns: each non-empty staging queue gives up to `quantum` requests per
  round-robin turn, so a small job is never held behind a big one.
Requests never pass through the router's memory while staged: its memory is bounded by one read
batch, whatever the backlog.
"""

from __future__ import annotations

import logging

import msgspec
import redis.asyncio as aioredis

from services.dispatcher.consumer import BatchConsumer
from shared.api import ErrorInfo, ResultLine, Timings, Usage
from shared.keys import LANES, PAYLOAD_FIELD, ROUTER_GROUP, WORKER_GROUP, Keys
from shared.messages import ResultEnvelope, chunk_decoder, request_decoder
from shared.models_config import ModelConfig, ModelsConfig
from shared.streams import ensure_group

log = logging.getLogger("inferq.router")

_ADMIT = """
-- KEYS[1] ingest stream, KEYS[2..] destinations. ARGV[1] group, ARGV[2] payload field, then per
-- ingest entry: id, n_ops, and ops:
--   'q', queue, ring, flow, staged field, count, payloads...  -> staging queue (+ ring, + count)
--   's', stream, payload                                      -> straight to a stream
local group, field = ARGV[1], ARGV[2]
local i = 3
local admitted = 0
while i <= #ARGV do
  local id, nops = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local fresh = redis.call('XACK', KEYS[1], group, id) == 1
  for _ = 1, nops do
    if ARGV[i] == 'q' then
      local q, ring, flow = KEYS[tonumber(ARGV[i + 1])], KEYS[tonumber(ARGV[i + 2])], KEYS[tonumber(ARGV[i + 3])]
      local staged, n = ARGV[i + 4], tonumber(ARGV[i + 5])
      if fresh then
        local len = redis.call('RPUSH', q, unpack(ARGV, i + 6, i + 5 + n))
        if len == n then redis.call('RPUSH', ring, q) end
        redis.call('HINCRBY', flow, staged, n)
        admitted = admitted + n
      end
      i = i + 6 + n
    else
      if fresh then redis.call('XADD', KEYS[tonumber(ARGV[i + 1])], '*', field, ARGV[i + 2]) end
      i = i + 3
    end
  end
end
return admitted
"""

_FEED = """
-- KEYS[1] interactive stream, KEYS[2] batch stream, KEYS[3] interactive ring, KEYS[4] batch ring, KEYS[5] flow.
-- ARGV: worker group, payload field, high watermark, low watermark, most to move, quantum.
local group, field = ARGV[1], ARGV[2]
local high, low, max_move, quantum = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

-- Backlog of a lane stream (unread + unacknowledged), dropping entries the group has acknowledged
-- so the stream's length tracks its backlog.
local function backlog(stream)
  if redis.call('EXISTS', stream) == 0 then return 0 end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local t = {}
    for k = 1, #g, 2 do t[g[k]] = g[k + 1] end
    if t['name'] == group then
      if t['pending'] > 0 then
        redis.call('XTRIM', stream, 'MINID', redis.call('XPENDING', stream, group)[2])
      else
        local ms, seq = string.match(t['last-delivered-id'], '^(%d+)-(%d+)$')
        redis.call('XTRIM', stream, 'MINID', ms .. '-' .. (tonumber(seq) + 1))
      end
      local lag = t['lag']
      if not lag then lag = redis.call('XLEN', stream) - t['pending'] end
      return lag + t['pending']
    end
  end
  return redis.call('XLEN', stream)
end

-- Round-robin over the ring's staging queues, `quantum` requests per turn.
local function drain(ring, stream, budget, staged)
  local moved = 0
  local live = redis.call('LLEN', ring)
  while budget > 0 and live > 0 do
    local q = redis.call('LPOP', ring)
    local items = redis.call('LPOP', q, math.min(quantum, budget))
    if items then
      for _, item in ipairs(items) do
        redis.call('XADD', stream, '*', field, item)
      end
      moved = moved + #items
      budget = budget - #items
    end
    if redis.call('EXISTS', q) == 1 then
      redis.call('RPUSH', ring, q)
    else
      live = live - 1
    end
  end
  if moved > 0 then redis.call('HINCRBY', KEYS[5], staged, -moved) end
  return moved
end

local bi, bb = backlog(KEYS[1]), backlog(KEYS[2])
local moved_i = drain(KEYS[3], KEYS[1], math.min(max_move, high - bi), 'staged:interactive')
local total = bi + bb + moved_i
local paused = redis.call('HGET', KEYS[5], 'paused') == '1'
if paused and total < low then
  paused = false
  redis.call('HSET', KEYS[5], 'paused', '0')
end
local moved_b = 0
if not paused then
  moved_b = drain(KEYS[4], KEYS[2], math.min(max_move, high - total), 'staged:batch')
  if total + moved_b >= high then
    paused = true
    redis.call('HSET', KEYS[5], 'paused', '1')
  end
end
local waiting = redis.call('LLEN', KEYS[3]) + redis.call('LLEN', KEYS[4])
return {moved_i, moved_b, paused and 1 or 0, waiting}
"""

_results_encoder = msgspec.msgpack.Encoder()


class Router(BatchConsumer):
    role = "router"

    def __init__(
        self, r: aioredis.Redis, keys: Keys, models: ModelsConfig, *, count: int = 8, max_move: int = 2000, **kw
    ) -> None:
        super().__init__(r, keys.ingest_stream, ROUTER_GROUP, count=count, **kw)
        self.keys = keys
        self.models = models
        self.max_move = max_move
        self.admitted = 0
        self.routed = 0
        self._waiting = False  # some model has staged requests
        self._moving = False  # the last feed round moved something
        self._admit = r.register_script(_ADMIT)
        self._feed = r.register_script(_FEED)

    async def prepare(self) -> None:
        for name in self.models.names():
            for stream in self.keys.model_streams(name):
                await ensure_group(self.r, stream, WORKER_GROUP)

    def idle_block_ms(self) -> int | None:
        """Read the ingest stream without waiting while requests are moving, briefly while some are
        waiting for room below a watermark, and for the full block time otherwise."""
        if self._moving:
            return None
        return 20 if self._waiting else self.block_ms

    async def handle(self, entries) -> None:
        await self.admit(entries)

    async def tick(self) -> None:
        await self.feed_all()

    async def admit(self, entries) -> int:
        keys = [self.keys.ingest_stream, self.keys.results_stream, self.keys.dead_letter_stream]
        index: dict[str, int] = {}

        def key(name: str) -> int:
            if name not in index:
                keys.append(name)
                index[name] = len(keys)
            return index[name]

        args: list[bytes | str | int] = [ROUTER_GROUP, PAYLOAD_FIELD]
        for entry_id, fields in entries:
            raw = fields.get(PAYLOAD_FIELD.encode(), b"")
            try:
                chunk = chunk_decoder.decode(raw)
            except msgspec.DecodeError:
                log.error("undecodable ingest entry %s moved to the dead-letter stream", entry_id)
                args += (entry_id, 1, "s", 3, raw)
                continue
            groups: dict[tuple[str, str], list[bytes]] = {}
            direct: list[tuple[int, bytes]] = []  # (destination key index, payload)
            for model, lane, payload in chunk.items:
                if model in self.models.models and lane in LANES:
                    groups.setdefault((model, lane), []).append(payload)
                else:
                    failed = _unroutable_result(chunk.job_id, payload)
                    direct.append((2, failed) if failed is not None else (3, payload))
            args += (entry_id, len(groups) + len(direct))
            for (model, lane), payloads in groups.items():
                args += ("q", key(self.keys.staging_queue(model, lane, chunk.job_id)), key(self.keys.staging_ring(model, lane)),
                         key(self.keys.flow(model)), f"staged:{lane}", len(payloads), *payloads)
            for index, payload in direct:
                args += ("s", index, payload)
        n = int(await self._admit(keys=keys, args=args))
        self.admitted += n
        self._waiting = self._waiting or n > 0
        return n

    async def feed(self, model: ModelConfig) -> tuple[int, int, bool, int]:
        """Move what flow control allows for one model: (interactive moved, batch moved, paused, queues waiting)."""
        name = model.name
        keys = [*self.keys.model_streams(name), *(self.keys.staging_ring(name, lane) for lane in LANES), self.keys.flow(name)]
        args = [WORKER_GROUP, PAYLOAD_FIELD, model.high_watermark, model.low_watermark, self.max_move, model.flow.quantum]
        moved_i, moved_b, paused, waiting = await self._feed(keys=keys, args=args)
        self.routed += moved_i + moved_b
        return int(moved_i), int(moved_b), bool(paused), int(waiting)

    async def feed_all(self) -> None:
        moving = waiting = False
        for model in self.models.models.values():
            moved_i, moved_b, _, queues = await self.feed(model)
            moving = moving or moved_i + moved_b > 0
            waiting = waiting or queues > 0
        self._moving, self._waiting = moving, waiting


def _unroutable_result(job_id: str, payload: bytes) -> bytes | None:
    """A model removed from the models file after its job was accepted: fail the request visibly
    instead of leaving it in a queue nobody reads. None if the request cannot even be read."""
    try:
        req = request_decoder.decode(payload)
    except msgspec.DecodeError:
        return None
    line = ResultLine(
        custom_id=req.custom_id, request_id=req.request_id, model=req.model, status="failed", output=None,
        usage=Usage(), timings=Timings(queued_ms=0.0, inference_ms=0.0),
        error=ErrorInfo(code="model_not_found", message=f"model {req.model!r} is no longer configured"),
    )
    return _results_encoder.encode(ResultEnvelope(job_id, line))
