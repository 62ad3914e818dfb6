"""Router: admits requests from the ingest stream into per-job staging queues, and feeds each
model's streams from those queues under flow control.

Admit: one Lua call per read batch acknowledges each ingest chunk and appends its requests to the
staging queue of (model, lane, job), but only if the XACK removed the entry from the pending list,
so a chunk delivered twice (after a reclaim) is admitted once. Requests of a job being cancelled or
expired become drop notices instead, so they never reach a model stream.

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
from shared.api import DeadLetter, ErrorInfo, ResultLine, Timings, Usage
from shared.deadletters import META_FIELD, meta
from shared.keys import DROP_FIELD, LANES, PAYLOAD_FIELD, REASON_FIELD, ROUTER_GROUP, WORKER_GROUP, Keys
from shared.messages import ResultEnvelope, chunk_decoder, request_decoder
from shared.models_config import ModelConfig, ModelsConfig
from shared.streams import ensure_group

log = logging.getLogger("inferq.router")

_ADMIT = """
-- KEYS[1] ingest stream, KEYS[2] results stream, KEYS[3..] other keys. ARGV: group, drop field,
-- reason field, then per ingest entry: id, n_ops, and ops:
--   'q', queue, ring, flow, job, staged field, count, payloads...
--        stage the requests, if their job still runs; turn them into drop notices if it is being
--        cancelled or expired; skip them if it is finished or gone
--   'f', stream, n, (field, value) x n    -> append one entry to a stream
-- Nothing happens for an entry whose XACK finds it no longer pending here.
local group, drop, reason = ARGV[1], ARGV[2], ARGV[3]
local stopping = {cancelling = 'cancelled', expiring = 'expired'}
local i = 4
local admitted = 0
while i <= #ARGV do
  local id, nops = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local fresh = redis.call('XACK', KEYS[1], group, id) == 1
  for _ = 1, nops do
    if ARGV[i] == 'q' then
      local q, ring, flow, job = KEYS[tonumber(ARGV[i + 1])], KEYS[tonumber(ARGV[i + 2])], KEYS[tonumber(ARGV[i + 3])], KEYS[tonumber(ARGV[i + 4])]
      local staged, n = ARGV[i + 5], tonumber(ARGV[i + 6])
      if fresh then
        local st = redis.call('HGET', job, 'status')
        if st == 'queued' or st == 'in_progress' then
          local len = redis.call('RPUSH', q, unpack(ARGV, i + 7, i + 6 + n))
          if len == n then redis.call('RPUSH', ring, q) end
          redis.call('HINCRBY', flow, staged, n)
          admitted = admitted + n
        elseif stopping[st] then
          for j = i + 7, i + 6 + n do
            redis.call('XADD', KEYS[2], '*', drop, ARGV[j], reason, stopping[st])
          end
        end
      end
      i = i + 7 + n
    else
      local n = tonumber(ARGV[i + 2])
      if fresh then redis.call('XADD', KEYS[tonumber(ARGV[i + 1])], '*', unpack(ARGV, i + 3, i + 2 + 2 * n)) end
      i = i + 3 + 2 * n
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

    async def handle_poison(self, entries, deliveries: dict[bytes, int]) -> None:
        await self.admit(entries, deliveries)

    async def tick(self) -> None:
        await self.feed_all()

    async def admit(self, entries, deliveries: dict[bytes, int] | None = None) -> int:
        """Stage each chunk's requests (or, for a chunk delivered more than `max_deliveries`
        times, dead-letter it and fail its requests), acknowledging it in the same script."""
        batch = _AdmitBatch(self.keys)
        for entry_id, fields in entries:
            raw = fields.get(PAYLOAD_FIELD.encode(), b"")
            times = (deliveries or {}).get(entry_id, 1)
            try:
                chunk = chunk_decoder.decode(raw)
            except msgspec.DecodeError as exc:
                log.error("undecodable ingest entry %s moved to the dead-letter stream", entry_id)
                batch.entry(entry_id, [batch.dead(raw, DeadLetter(source=self.stream, reason="undecodable", attempts=times, error=str(exc)))])
                continue
            if times > self.max_deliveries:
                why = f"ingest chunk delivered {times} times; each router that took it stopped before finishing"
                log.error(why, extra={"job_id": chunk.job_id})
                info = DeadLetter(source=self.stream, reason="max_attempts_exceeded", attempts=times, error=why, job_id=chunk.job_id)
                batch.entry(entry_id, [batch.dead(raw, info), *(batch.drop(p, "max_attempts_exceeded") for _, _, p in chunk.items)])
                continue
            groups: dict[tuple[str, str], list[bytes]] = {}
            ops: list[list] = []
            for model, lane, payload in chunk.items:
                if model in self.models.models and lane in LANES:
                    groups.setdefault((model, lane), []).append(payload)
                else:
                    failed = _unroutable_result(chunk.job_id, payload)
                    ops.append(batch.result(failed) if failed is not None else batch.dead(
                        payload, DeadLetter(source=self.stream, reason="undecodable", attempts=times, job_id=chunk.job_id)))
            for (model, lane), payloads in groups.items():
                ops.append(batch.stage(model, lane, chunk.job_id, payloads))
            batch.entry(entry_id, ops)
        n = int(await self._admit(keys=batch.keys, args=batch.args))
        self.admitted += n
        self._waiting = self._waiting or n > 0
        return n

    def _feed_call(self, model: ModelConfig) -> tuple[list[str], list]:
        name = model.name
        keys = [*self.keys.model_streams(name), *(self.keys.staging_ring(name, lane) for lane in LANES), self.keys.flow(name)]
        args = [WORKER_GROUP, PAYLOAD_FIELD, model.high_watermark, model.low_watermark, self.max_move, model.flow.quantum]
        return keys, args

    async def feed(self, model: ModelConfig) -> tuple[int, int, bool, int]:
        """Move what flow control allows for one model: (interactive moved, batch moved, paused, queues waiting)."""
        keys, args = self._feed_call(model)
        moved_i, moved_b, paused, waiting = await self._feed(keys=keys, args=args)
        self.routed += moved_i + moved_b
        return int(moved_i), int(moved_b), bool(paused), int(waiting)

    async def feed_all(self) -> None:
        """Feed every model in one round trip (one script call per model, pipelined)."""
        pipe = self.r.pipeline(transaction=False)
        for model in self.models.models.values():
            keys, args = self._feed_call(model)
            await self._feed(keys=keys, args=args, client=pipe)
        moving = waiting = False
        for moved_i, moved_b, _, queues in await pipe.execute():
            self.routed += moved_i + moved_b
            moving = moving or moved_i + moved_b > 0
            waiting = waiting or queues > 0
        self._moving, self._waiting = moving, waiting


class _AdmitBatch:
    """Builds the KEYS and ARGV of one admit call."""

    def __init__(self, keys: Keys) -> None:
        self.k = keys
        self.keys = [keys.ingest_stream, keys.results_stream]
        self.args: list[bytes | str | int] = [ROUTER_GROUP, DROP_FIELD, REASON_FIELD]
        self._index: dict[str, int] = {}

    def key(self, name: str) -> int:
        if name not in self._index:
            self.keys.append(name)
            self._index[name] = len(self.keys)
        return self._index[name]

    def entry(self, entry_id: bytes, ops: list[list]) -> None:
        self.args += (entry_id, len(ops))
        for op in ops:
            self.args += op

    def stage(self, model: str, lane: str, job_id: str, payloads: list[bytes]) -> list:
        k = self.k
        return ["q", self.key(k.staging_queue(model, lane, job_id)), self.key(k.staging_ring(model, lane)),
                self.key(k.flow(model)), self.key(k.job(job_id)), f"staged:{lane}", len(payloads), *payloads]

    def result(self, payload: bytes) -> list:
        return ["f", 2, 1, PAYLOAD_FIELD, payload]

    def drop(self, payload: bytes, reason: str) -> list:
        return ["f", 2, 2, DROP_FIELD, payload, REASON_FIELD, reason]

    def dead(self, payload: bytes, info: DeadLetter) -> list:
        return ["f", self.key(self.k.dead_letter_stream), 2, PAYLOAD_FIELD, payload, META_FIELD, meta(info)]


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
