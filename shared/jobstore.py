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

_CREATE = """
-- Admission check, then the whole job, or nothing.
-- KEYS[1] job, KEYS[2] jobs index, KEYS[3] ingest stream, KEYS[4] backlog total, KEYS[4 + m] flow of model m.
-- ARGV: job_id, created_ms, total, global_limit, payload field, n_models, (model, count, limit) x n_models,
--       n_fields, (field, value) x n_fields, chunks...
local job_id, created, total, glimit, field = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local nm = tonumber(ARGV[6])
local current = tonumber(redis.call('GET', KEYS[4]) or '0')
if current + total > glimit then
  return {'global', '', tostring(current), tostring(glimit)}
end
for m = 1, nm do
  local a = 7 + (m - 1) * 3
  local n, limit = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local c = tonumber(redis.call('HGET', KEYS[4 + m], 'unfinished') or '0')
  if c + n > limit then
    return {'model', ARGV[a], tostring(c), tostring(limit)}
  end
end
local a = 7 + nm * 3
local nf = tonumber(ARGV[a])
redis.call('HSET', KEYS[1], unpack(ARGV, a + 1, a + nf * 2))
redis.call('ZADD', KEYS[2], created, job_id)
for i = a + nf * 2 + 1, #ARGV do
  redis.call('XADD', KEYS[3], '*', field, ARGV[i])
end
for m = 1, nm do
  redis.call('HINCRBY', KEYS[4 + m], 'unfinished', ARGV[7 + (m - 1) * 3 + 1])
end
redis.call('INCRBY', KEYS[4], total)
return {'ok'}
"""

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
-- KEYS[1] results stream, KEYS[2] events stream, KEYS[3] backlog total,
-- then (job, reqs, job_results, model flow) quadruples.
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
for k = 4, #KEYS, 4 do
  local job, reqs, res, flow = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
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
      redis.call('HINCRBY', flow, 'unfinished', -1)
      redis.call('DECR', KEYS[3])
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


class AdmissionRejected(Exception):
    """Accepting the job would push a model's (or the overall) unfinished backlog over its limit."""

    def __init__(self, model: str | None, current: int, limit: int) -> None:
        super().__init__(f"backlog of {model or 'all models'} is {current}; limit {limit}")
        self.model = model
        self.current = current
        self.limit = limit


class JobStore:
    def __init__(self, r: aioredis.Redis, keys: Keys, job_ttl_s: int = 7 * 24 * 3600) -> None:
        self.r = r
        self.keys = keys
        self.job_ttl_s = job_ttl_s
        self._create = r.register_script(_CREATE)
        self._mark_started = r.register_script(_MARK_STARTED)
        self._record_results = r.register_script(_RECORD_RESULTS)

    async def create(
        self,
        job_id: str,
        created_ms: int,
        model_totals: dict[str, int],
        metadata: dict[str, str],
        chunks: list[bytes],
        *,
        priority: str = "batch",
        model_limits: dict[str, int] | None = None,
        global_limit: int = 2**62,
    ) -> None:
        """Check admission limits and write the job record with all its ingest entries in one Lua
        script: either the whole job exists, with every request queued, or nothing of it does.
        Raises AdmissionRejected (and writes nothing) when a limit would be exceeded."""
        total = sum(model_totals.values())
        record: dict[str, str | int] = {
            "id": job_id,
            "status": "queued",
            "priority": priority,
            "created_ms": created_ms,
            "total": total,
            "done": 0,
            "metadata": msgspec.json.encode(metadata).decode(),
            "models": msgspec.json.encode(sorted(model_totals)).decode(),
        }
        for model, n in model_totals.items():
            record[f"m:{model}:total"] = n
        models = sorted(model_totals)
        limits = model_limits or {}
        keys = [self.keys.job(job_id), self.keys.jobs_index, self.keys.ingest_stream, self.keys.backlog_total]
        keys += [self.keys.flow(m) for m in models]
        args: list[str | int | bytes] = [job_id, created_ms, total, global_limit, PAYLOAD_FIELD, len(models)]
        for m in models:
            args += (m, model_totals[m], limits.get(m, 2**62))
        args.append(len(record))
        for k, v in record.items():
            args += (k, v)
        args += chunks
        verdict = await self._create(keys=keys, args=args)
        if verdict[0] != b"ok":
            raise AdmissionRejected(verdict[1].decode() or None, int(verdict[2]), int(verdict[3]))

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
        keys = [self.keys.results_stream, self.keys.events_stream, self.keys.backlog_total]
        args: list[str | int | bytes] = [
            group, int(now * 1000), _rfc3339(now), self.job_ttl_s, EVENTS_MAXLEN, EVENT_SOURCE, len(ack_ids), *ack_ids,
        ]
        for rec in records:
            keys += (*self.keys.job_keys(rec.job_id), self.keys.flow(rec.model))
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
        priority=h.get("priority", "batch"),
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
