"""The job record in Redis, and the only code that changes it.

A job is three keys (see `Keys.job_keys`): a hash with status, counts, usage and timestamps; a hash
request_id -> 'r'|'d' that makes each start and each result count exactly once; and a stream of
finished result lines whose entry ids are the results cursor. Counts that can be derived are:
queued = total - running - terminal.

Every change runs as one MULTI/EXEC or Lua script, together with the XACK of the message that
caused it, so a crash never leaves a change half made or a message acknowledged without effect.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import msgspec
import redis.asyncio as aioredis

from shared.api import Job, RequestCounts, Usage
from shared.keys import EVENT_FIELD, PAYLOAD_FIELD, Keys

TERMINAL_REQUEST_STATES = ("succeeded", "failed", "cancelled", "expired")
TERMINAL_JOB_STATES = ("completed", "failed", "cancelled", "expired")
EVENT_SOURCE = "/inferq/jobs"
EVENTS_MAXLEN = 1_000_000

_MARK_STARTED = """
-- KEYS: (job, reqs) pairs. ARGV[1] = now ms, then (request_id, model) pairs.
local now = ARGV[1]
local started = 0
local a = 2
for k = 1, #KEYS, 2 do
  local job, reqs = KEYS[k], KEYS[k + 1]
  local rid, model = ARGV[a], ARGV[a + 1]
  a = a + 2
  local st = redis.call('HGET', job, 'status')
  if (st == 'queued' or st == 'in_progress') and redis.call('HSETNX', reqs, rid, 'r') == 1 then
    redis.call('HINCRBY', job, 'running', 1)
    redis.call('HINCRBY', job, 'm:' .. model .. ':running', 1)
    if st == 'queued' then
      redis.call('HSET', job, 'status', 'in_progress', 'started_ms', now)
    end
    started = started + 1
  end
end
return started
"""

_RECORD_RESULTS = """
-- KEYS[1] results stream, KEYS[2] events stream, then (job, reqs, job_results) triples.
-- ARGV: group, now_ms, now_rfc3339, ttl_s, events_maxlen, event_source, n_ack, ack ids...,
--       then per result: request_id, model, status, prompt_tokens, completion_tokens, line.
local group, now, now_iso, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local maxlen, source, nack = ARGV[5], ARGV[6], tonumber(ARGV[7])
for i = 8, 7 + nack, 500 do
  redis.call('XACK', KEYS[1], group, unpack(ARGV, i, math.min(i + 499, 7 + nack)))
end
local a = 8 + nack
local applied = 0
local completed = {}
for k = 3, #KEYS, 3 do
  local job, reqs, res = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local rid, model, status = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local pt, ct, line = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 5]
  a = a + 6
  local js = redis.call('HGET', job, 'status')
  if js == 'queued' or js == 'in_progress' or js == 'cancelling' then
    local state = redis.call('HGET', reqs, rid)
    if state ~= 'd' then
      redis.call('HSET', reqs, rid, 'd')
      if state == 'r' then
        redis.call('HINCRBY', job, 'running', -1)
        redis.call('HINCRBY', job, 'm:' .. model .. ':running', -1)
      end
      redis.call('HINCRBY', job, status, 1)
      redis.call('HINCRBY', job, 'm:' .. model .. ':' .. status, 1)
      if pt > 0 then redis.call('HINCRBY', job, 'prompt_tokens', pt) end
      if ct > 0 then redis.call('HINCRBY', job, 'completion_tokens', ct) end
      redis.call('XADD', res, '*', 'l', line)
      if js == 'queued' then
        redis.call('HSET', job, 'status', 'in_progress', 'started_ms', now)
      end
      applied = applied + 1
      local done = redis.call('HINCRBY', job, 'done', 1)
      if done >= tonumber(redis.call('HGET', job, 'total')) then
        redis.call('HSET', job, 'status', 'completed', 'completed_ms', now)
        local h = redis.call('HMGET', job, 'id', 'total', 'succeeded', 'failed', 'cancelled', 'expired',
                             'prompt_tokens', 'completion_tokens', 'created_ms')
        local function n(v) return tonumber(v) or 0 end
        local event = cjson.encode({
          specversion = '1.0', id = h[1] .. '.completed', source = source,
          type = 'dev.inferq.job.completed', subject = h[1], time = now_iso,
          datacontenttype = 'application/json',
          data = {
            id = h[1], object = 'job', status = 'completed',
            request_counts = {total = n(h[2]), queued = 0, running = 0, succeeded = n(h[3]),
                              failed = n(h[4]), cancelled = n(h[5]), expired = n(h[6])},
            usage = {prompt_tokens = n(h[7]), completion_tokens = n(h[8])},
            created_at = math.floor(n(h[9]) / 1000), completed_at = math.floor(tonumber(now) / 1000)
          }
        })
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'type', 'job.completed', '%EVENT_FIELD%', event)
        redis.call('DEL', reqs)
        redis.call('EXPIRE', job, ttl)
        redis.call('EXPIRE', res, ttl)
        completed[#completed + 1] = h[1]
        js = 'completed'
      end
    end
  end
end
return {applied, completed}
""".replace("%EVENT_FIELD%", EVENT_FIELD)


class ResultRecord(msgspec.Struct, array_like=True):
    """What the collector needs of one result to apply it; `line` is the stored JSON line."""

    job_id: str
    request_id: str
    model: str
    status: str
    prompt_tokens: int
    completion_tokens: int
    line: bytes


class JobStore:
    def __init__(self, r: aioredis.Redis, keys: Keys, job_ttl_s: int = 7 * 24 * 3600) -> None:
        self.r = r
        self.keys = keys
        self.job_ttl_s = job_ttl_s
        self._mark_started = r.register_script(_MARK_STARTED)
        self._record_results = r.register_script(_RECORD_RESULTS)

    async def create(
        self,
        job_id: str,
        created_ms: int,
        model_totals: dict[str, int],
        metadata: dict[str, str],
        chunks: list[bytes],
    ) -> None:
        """Write the job record and all its ingest entries in one MULTI/EXEC: either the whole
        job exists, with every request queued, or nothing of it does."""
        total = sum(model_totals.values())
        record: dict[str, str | int] = {
            "id": job_id,
            "status": "queued",
            "created_ms": created_ms,
            "total": total,
            "done": 0,
            "metadata": msgspec.json.encode(metadata).decode(),
            "models": msgspec.json.encode(sorted(model_totals)).decode(),
        }
        for model, n in model_totals.items():
            record[f"m:{model}:total"] = n
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.job(job_id), mapping=record)
            pipe.zadd(self.keys.jobs_index, {job_id: created_ms})
            for chunk in chunks:
                pipe.xadd(self.keys.ingest_stream, {PAYLOAD_FIELD: chunk})
            await pipe.execute()

    async def mark_started(self, started: list[tuple[str, str, str]], now_ms: int | None = None) -> int:
        """Mark (job_id, request_id, model) as running; repeated marks (redeliveries) are no-ops."""
        if not started:
            return 0
        keys: list[str] = []
        args: list[str | int] = [now_ms or _now_ms()]
        for job_id, rid, model in started:
            keys += (self.keys.job(job_id), self.keys.job_requests(job_id))
            args += (rid, model)
        return int(await self._mark_started(keys=keys, args=args))

    async def record_results(
        self, group: str, ack_ids: list[bytes], records: list[ResultRecord]
    ) -> tuple[int, list[str]]:
        """Apply results and acknowledge their results-stream entries atomically.

        Returns (results applied, ids of jobs this call completed). A result whose request already
        has one, or whose job is finished or gone, is acknowledged and ignored."""
        now = time.time()
        keys = [self.keys.results_stream, self.keys.events_stream]
        args: list[str | int | bytes] = [
            group, int(now * 1000), _rfc3339(now), self.job_ttl_s, EVENTS_MAXLEN, EVENT_SOURCE, len(ack_ids), *ack_ids,
        ]
        for rec in records:
            keys += self.keys.job_keys(rec.job_id)
            args += (rec.request_id, rec.model, rec.status, rec.prompt_tokens, rec.completion_tokens, rec.line)
        applied, completed = await self._record_results(keys=keys, args=args)
        return int(applied), [c.decode() for c in completed]

    async def get(self, job_id: str) -> Job | None:
        raw = await self.r.hgetall(self.keys.job(job_id))
        if not raw:
            return None
        return job_from_hash({k.decode(): v.decode() for k, v in raw.items()})

    async def exists(self, job_id: str) -> bool:
        return bool(await self.r.exists(self.keys.job(job_id)))

    async def status(self, job_id: str) -> str | None:
        value = await self.r.hget(self.keys.job(job_id), "status")
        return value.decode() if value else None

    async def read_results(self, job_id: str, after: str | None, limit: int) -> list[tuple[bytes, bytes]]:
        """Result lines after cursor `after` (exclusive), oldest first: [(cursor, json line)]."""
        start = f"({after}" if after else "-"
        entries = await self.r.xrange(self.keys.job_results(job_id), min=start, max="+", count=limit)
        return [(entry_id, fields[b"l"]) for entry_id, fields in entries]


def job_from_hash(h: dict[str, str]) -> Job:
    def counts(prefix: str) -> RequestCounts:
        c = {s: int(h.get(f"{prefix}{s}", 0)) for s in ("total", "running", *TERMINAL_REQUEST_STATES)}
        c["queued"] = c["total"] - c["running"] - sum(c[s] for s in TERMINAL_REQUEST_STATES)
        return RequestCounts(**c)

    models = msgspec.json.decode(h.get("models", "[]"), type=list[str])
    return Job(
        id=h["id"],
        status=h["status"],
        created_at=int(h["created_ms"]) // 1000,
        started_at=int(h["started_ms"]) // 1000 if "started_ms" in h else None,
        completed_at=int(h["completed_ms"]) // 1000 if "completed_ms" in h else None,
        request_counts=counts(""),
        models={m: counts(f"m:{m}:") for m in models},
        usage=Usage(prompt_tokens=int(h.get("prompt_tokens", 0)), completion_tokens=int(h.get("completion_tokens", 0))),
        metadata=msgspec.json.decode(h.get("metadata", "{}"), type=dict[str, str]),
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
