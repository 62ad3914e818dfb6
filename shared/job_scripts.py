"""Lua scripts that change job records. Each runs atomically, with the acknowledgement (or the
admission check) it belongs to. Key names are always passed in KEYS, built by `shared.keys`."""

CREATE = """
-- Idempotency, admission, then the whole job, or nothing.
-- KEYS: job, jobs index, ingest stream, backlog total, deadlines, idempotency key (or the job key
--       again when there is none), then the flow hash of each model.
-- ARGV: job_id, created_ms, total, global_limit, payload field, expires_ms, idempotency value ('' = none),
--       n_models, (model, count, limit) x n_models, n_fields, (field, value) x n_fields, chunks...
local job_id, created, total, glimit = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local field, expires, idem = ARGV[5], ARGV[6], ARGV[7]
local nm = tonumber(ARGV[8])
if idem ~= '' then
  local seen = redis.call('GET', KEYS[6])
  if seen then
    local sep = string.find(seen, ':', 1, true)
    local same = string.sub(seen, sep + 1) == string.sub(idem, string.find(idem, ':', 1, true) + 1)
    return {same and 'replay' or 'conflict', string.sub(seen, 1, sep - 1), '', ''}
  end
end
local current = tonumber(redis.call('GET', KEYS[4]) or '0')
if current + total > glimit then
  return {'global', '', tostring(current), tostring(glimit)}
end
for m = 1, nm do
  local a = 9 + (m - 1) * 3
  local n, limit = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local c = tonumber(redis.call('HGET', KEYS[6 + m], 'unfinished') or '0')
  if c + n > limit then
    return {'model', ARGV[a], tostring(c), tostring(limit)}
  end
end
local a = 9 + nm * 3
local nf = tonumber(ARGV[a])
redis.call('HSET', KEYS[1], unpack(ARGV, a + 1, a + nf * 2))
redis.call('ZADD', KEYS[2], created, job_id)
redis.call('ZADD', KEYS[5], expires, job_id)
for i = a + nf * 2 + 1, #ARGV do
  redis.call('XADD', KEYS[3], '*', field, ARGV[i])
end
for m = 1, nm do
  redis.call('HINCRBY', KEYS[6 + m], 'unfinished', ARGV[9 + (m - 1) * 3 + 1])
end
redis.call('INCRBY', KEYS[4], total)
if idem ~= '' then
  redis.call('SET', KEYS[6], idem, 'EX', 86400)
end
return {'ok', job_id, '', ''}
"""

MARK_STARTED = """
-- KEYS: (job, reqs) pairs. ARGV[1] = now ms, then (request_id, model) pairs.
-- Returns one verdict per request: 'run', or why it must not run: 'cancelled' / 'expired'
-- (its job is being stopped), 'gone' (its job is finished or no longer exists).
local now = ARGV[1]
local verdicts = {}
local a = 2
for k = 1, #KEYS, 2 do
  local job, reqs = KEYS[k], KEYS[k + 1]
  local rid, model = ARGV[a], ARGV[a + 1]
  a = a + 2
  local st = redis.call('HGET', job, 'status')
  if st == 'queued' or st == 'in_progress' then
    if redis.call('HSETNX', reqs, rid, 'r') == 1 then
      redis.call('HINCRBY', job, 'running', 1)
      redis.call('HINCRBY', job, 'm:' .. model .. ':running', 1)
      if st == 'queued' then
        redis.call('HSET', job, 'status', 'in_progress', 'started_ms', now)
      end
    end
    verdicts[#verdicts + 1] = 'run'
  elseif st == 'cancelling' then
    verdicts[#verdicts + 1] = 'cancelled'
  elseif st == 'expiring' then
    verdicts[#verdicts + 1] = 'expired'
  else
    verdicts[#verdicts + 1] = 'gone'
  end
end
return verdicts
"""

RECORD_RESULTS = """
-- KEYS[1] results stream, KEYS[2] events stream, KEYS[3] backlog total, KEYS[4] deadlines,
-- then (job, reqs, job_results, model flow) quadruples.
-- ARGV: group, now_ms, now_rfc3339, ttl_s, events_maxlen, event_source, event_field, n_ack, ack ids...,
--       then per result: request_id, model, status, prompt_tokens, completion_tokens, line, error code.
local group, now, now_iso, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local maxlen, source, event_field, nack = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
for i = 9, 8 + nack, 500 do
  redis.call('XACK', KEYS[1], group, unpack(ARGV, i, math.min(i + 499, 8 + nack)))
end
local final_status = {queued = 'completed', in_progress = 'completed', cancelling = 'cancelled', expiring = 'expired'}
local a = 9 + nack
local applied = 0
local finished = {}
for k = 5, #KEYS, 4 do
  local job, reqs, res, flow = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local rid, model, status = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local pt, ct, line, code = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 5], ARGV[a + 6]
  a = a + 7
  local js = redis.call('HGET', job, 'status')
  if final_status[js] then
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
      local line_id = redis.call('XADD', res, '*', 'l', line)
      if code == 'max_attempts_exceeded' then
        redis.call('HSET', job, 'dl:' .. rid, line_id)  -- lets an operator requeue it
      end
      redis.call('HINCRBY', flow, 'unfinished', -1)
      redis.call('DECR', KEYS[3])
      if js == 'queued' then
        redis.call('HSET', job, 'status', 'in_progress', 'started_ms', now)
      end
      applied = applied + 1
      local done = redis.call('HINCRBY', job, 'done', 1)
      if done >= tonumber(redis.call('HGET', job, 'total')) then
        local final = final_status[js]
        redis.call('HSET', job, 'status', final, 'ended_ms', now)
        local h = redis.call('HMGET', job, 'id', 'total', 'succeeded', 'failed', 'cancelled', 'expired',
                             'prompt_tokens', 'completion_tokens', 'created_ms')
        local function n(v) return tonumber(v) or 0 end
        local event = cjson.encode({
          specversion = '1.0', id = h[1] .. '.' .. final .. '.' .. now, source = source,
          type = 'dev.inferq.job.' .. final, subject = h[1], time = now_iso,
          datacontenttype = 'application/json',
          data = {
            id = h[1], object = 'job', status = final,
            request_counts = {total = n(h[2]), queued = 0, running = 0, succeeded = n(h[3]),
                              failed = n(h[4]), cancelled = n(h[5]), expired = n(h[6])},
            usage = {prompt_tokens = n(h[7]), completion_tokens = n(h[8])},
            created_at = math.floor(n(h[9]) / 1000), ended_at = math.floor(tonumber(now) / 1000)
          }
        })
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'type', 'job.' .. final, event_field, event)
        redis.call('ZREM', KEYS[4], h[1])
        redis.call('DEL', reqs)
        redis.call('EXPIRE', job, ttl)
        redis.call('EXPIRE', res, ttl)
        finished[#finished + 1] = h[1]
        finished[#finished + 1] = final
      end
    end
  end
end
return {applied, finished}
"""

STOP = """
-- Cancel or expire a job: mark it, and turn its staged requests into drop notices for the
-- collector, so they never reach a model stream. Requests already routed are dropped by the
-- worker that reads them; requests in flight finish.
-- KEYS[1] job, KEYS[2] results stream, KEYS[3] deadlines, then (queue, ring, flow) per model and lane.
-- ARGV: new status ('cancelling' | 'expiring'), reason ('cancelled' | 'expired'), now_ms,
--       drop field, reason field, then the staged-count field of each (model, lane).
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', ''} end
if st == 'cancelling' or st == 'expiring' then return {'stopping', st} end
if st ~= 'queued' and st ~= 'in_progress' then return {'finished', st} end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'stop_ms', ARGV[3])
redis.call('ZREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
local dropped = 0
for k = 4, #KEYS, 3 do
  local queue, ring, flow = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local items = redis.call('LRANGE', queue, 0, -1)
  if #items > 0 then
    redis.call('LREM', ring, 0, queue)
    for _, item in ipairs(items) do
      redis.call('XADD', KEYS[2], '*', ARGV[4], item, ARGV[5], ARGV[2])
    end
    redis.call('DEL', queue)
    redis.call('HINCRBY', flow, ARGV[6 + (k - 4) / 3], -#items)
    dropped = dropped + #items
  end
end
return {'ok', tostring(dropped)}
"""

REQUEUE = """
-- Give a dead-lettered request another chance: undo its `max_attempts_exceeded` failure (the
-- job's counts and its result line), reopen a completed job, and stage the request again.
-- KEYS: dead stream, job, reqs, job results, flow, backlog total, staging queue, staging ring.
-- ARGV: dead entry id, request_id, model, payload, staged-count field.
local st = redis.call('HGET', KEYS[2], 'status')
if not st then return {'gone', ''} end
if st ~= 'queued' and st ~= 'in_progress' and st ~= 'completed' then return {'stopped', st} end
local line = redis.call('HGET', KEYS[2], 'dl:' .. ARGV[2])
if not line then return {'not_failed', st} end
redis.call('XDEL', KEYS[4], line)
redis.call('HDEL', KEYS[2], 'dl:' .. ARGV[2])
redis.call('HINCRBY', KEYS[2], 'failed', -1)
redis.call('HINCRBY', KEYS[2], 'm:' .. ARGV[3] .. ':failed', -1)
redis.call('HINCRBY', KEYS[2], 'done', -1)
redis.call('HDEL', KEYS[3], ARGV[2])
if st == 'completed' then
  redis.call('HSET', KEYS[2], 'status', 'in_progress')
  redis.call('HDEL', KEYS[2], 'ended_ms')
  redis.call('PERSIST', KEYS[2])
  redis.call('PERSIST', KEYS[4])
end
redis.call('HINCRBY', KEYS[5], 'unfinished', 1)
redis.call('INCRBY', KEYS[6], 1)
if redis.call('RPUSH', KEYS[7], ARGV[4]) == 1 then redis.call('RPUSH', KEYS[8], KEYS[7]) end
redis.call('HINCRBY', KEYS[5], ARGV[5], 1)
redis.call('XDEL', KEYS[1], ARGV[1])
return {'ok', st}
"""
