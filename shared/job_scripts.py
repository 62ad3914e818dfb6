"""Lua scripts that change job records. Each runs atomically, with the acknowledgement (or the
admission check) it belongs to. Key names are always passed in KEYS, built by `shared.keys`."""

_HASH_HELPERS = """
-- HMGET / HSET over many fields, in slices (Lua's unpack has a stack limit).
local function hmget_all(key, fields)
  local out = {}
  for i = 1, #fields, 1000 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 999, #fields)))
    for k = 1, #part do out[i + k - 1] = part[k] end
  end
  return out
end
local function hset_all(key, pairs_list)
  for i = 1, #pairs_list, 1000 do
    redis.call('HSET', key, unpack(pairs_list, i, math.min(i + 999, #pairs_list)))
  end
end
"""

CREATE = """
-- Idempotency, admission, then the whole job, or nothing.
-- KEYS: job, jobs index, ingest stream, backlog total, deadlines, idempotency key (or the job key
--       again when there is none), then the flow hash of each model, then the tenant backlog hash.
-- ARGV: job_id, created_ms, total, global_limit, payload field, expires_ms, idempotency value ('' = none),
--       n_models, (model, count, limit) x n_models, tenant, tenant limit, n_fields,
--       (field, value) x n_fields, chunks...
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
local tenant, tlimit = ARGV[9 + nm * 3], tonumber(ARGV[10 + nm * 3])
local queued = tonumber(redis.call('HGET', KEYS[#KEYS], tenant) or '0')
if queued + total > tlimit then
  return {'tenant', tenant, tostring(queued), tostring(tlimit)}
end
for m = 1, nm do
  local a = 9 + (m - 1) * 3
  local n, limit = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local c = tonumber(redis.call('HGET', KEYS[6 + m], 'unfinished') or '0')
  if c + n > limit then
    return {'model', ARGV[a], tostring(c), tostring(limit)}
  end
end
local a = 11 + nm * 3
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
redis.call('HINCRBY', KEYS[#KEYS], tenant, total)
if idem ~= '' then
  redis.call('SET', KEYS[6], idem, 'EX', 86400)
end
return {'ok', job_id, '', ''}
"""

MARK_STARTED = _HASH_HELPERS + """
-- KEYS: (job, reqs) per job. ARGV[1] now ms, ARGV[2] msgpack: per job, in KEYS order, a list of
-- (request_id, model). Returns, per job, one verdict per request: 'run', or why it must not run:
-- 'cancelled' / 'expired' (its job is being stopped), 'gone' (finished or no longer exists).
-- A request already marked (a redelivery) is not counted again but still answers 'run'.
local now = ARGV[1]
local groups = cmsgpack.unpack(ARGV[2])
local out = {}
for g = 1, #groups do
  local job, reqs, items = KEYS[2 * g - 1], KEYS[2 * g], groups[g]
  local st = redis.call('HGET', job, 'status')
  local verdict = 'gone'
  if st == 'queued' or st == 'in_progress' then verdict = 'run'
  elseif st == 'cancelling' then verdict = 'cancelled'
  elseif st == 'expiring' then verdict = 'expired' end
  local verdicts = {}
  for i = 1, #items do verdicts[i] = verdict end
  out[g] = verdicts
  if verdict == 'run' then
    local rids = {}
    for i = 1, #items do rids[i] = items[i][1] end
    local states = hmget_all(reqs, rids)
    local marks, running, seen = {}, {}, {}
    for i = 1, #items do
      local rid, model = items[i][1], items[i][2]
      if not states[i] and not seen[rid] then
        seen[rid] = true
        marks[#marks + 1] = rid
        marks[#marks + 1] = 'r'
        running[model] = (running[model] or 0) + 1
      end
    end
    if #marks > 0 then
      hset_all(reqs, marks)
      redis.call('HINCRBY', job, 'running', #marks / 2)
      for model, n in pairs(running) do redis.call('HINCRBY', job, 'm:' .. model .. ':running', n) end
      if st == 'queued' then redis.call('HSET', job, 'status', 'in_progress', 'started_ms', now) end
    end
  end
end
return out
"""

RECORD_RESULTS = _HASH_HELPERS + """
-- Apply a batch of results, grouped by job, and acknowledge their results-stream entries.
-- KEYS[1] results stream, KEYS[2] events stream, KEYS[3] backlog total, KEYS[4] deadlines,
--      KEYS[5] webhook events stream, KEYS[6] set of endpoints subscribed to request events,
--      KEYS[7] tenant backlog hash,
--      then (job, reqs, job_results) per job, then the flow hash of each model.
-- ARGV: group, now_ms, now_rfc3339, ttl_s, events_maxlen, event_source, event_field, then msgpack
--       {ack ids, model names (in flow-key order), per job: list of (request_id, model index,
--       status, prompt_tokens, completion_tokens, line, error code), job ids (in KEYS order)}.
-- Each applied result also appends its request.completed event, and the last one of a job the
-- job's event, to the events stream.
-- Counters are summed in Lua and written once per job and field: per-result Redis calls are only
-- the duplicate check (one HMGET per job) and the result line's XADD.
local group, now, now_iso, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local maxlen, source, event_field = ARGV[5], ARGV[6], ARGV[7]
local batch = cmsgpack.unpack(ARGV[8])
local acks, models, jobs, job_ids = batch[1], batch[2], batch[3], batch[4]
for i = 1, #acks, 500 do
  redis.call('XACK', KEYS[1], group, unpack(acks, i, math.min(i + 499, #acks)))
end
local final_status = {queued = 'completed', in_progress = 'completed', cancelling = 'cancelled', expiring = 'expired'}
local flow_base = 7 + 3 * #jobs
-- request events go to the webhook fan-out only while an endpoint wants them
local hooks_all_requests = redis.call('SCARD', KEYS[6]) > 0
local unfinished = {}
local applied = 0
local finished = {}
for j = 1, #jobs do
  local job, reqs, res = KEYS[5 + 3 * j], KEYS[6 + 3 * j], KEYS[7 + 3 * j]
  local items = jobs[j]
  local js, job_wants_requests, tenant = unpack(redis.call('HMGET', job, 'status', 'wh_req', 'tenant'))
  local hook_requests = hooks_all_requests or job_wants_requests == '1'
  if final_status[js] then
    local rids = {}
    for i = 1, #items do rids[i] = items[i][1] end
    local states = hmget_all(reqs, rids)
    local marks, incr, seen = {}, {}, {}
    local n = 0
    for i = 1, #items do
      local it = items[i]
      local rid, m, status = it[1], it[2], it[3]
      local model = models[m]
      if states[i] ~= 'd' and not seen[rid] then
        seen[rid] = true
        marks[#marks + 1] = rid
        marks[#marks + 1] = 'd'
        if states[i] == 'r' then
          incr['running'] = (incr['running'] or 0) - 1
          incr['m:' .. model .. ':running'] = (incr['m:' .. model .. ':running'] or 0) - 1
        end
        incr[status] = (incr[status] or 0) + 1
        local f = 'm:' .. model .. ':' .. status
        incr[f] = (incr[f] or 0) + 1
        if it[4] > 0 then incr['prompt_tokens'] = (incr['prompt_tokens'] or 0) + it[4] end
        if it[5] > 0 then incr['completion_tokens'] = (incr['completion_tokens'] or 0) + it[5] end
        local line_id = redis.call('XADD', res, '*', 'l', it[6])
        -- the request.completed CloudEvent (same bytes as shared.events.request_event_json)
        local doc = '{"specversion":"1.0","id":"' .. rid .. '.' .. line_id .. '","source":"' .. source ..
          '","type":"com.inferq.request.completed","subject":"' .. job_ids[j] .. '","time":"' .. now_iso ..
          '","datacontenttype":"application/json","data":' .. it[6] .. '}'
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'type', 'request.completed', 'job', job_ids[j], event_field, doc)
        if hook_requests then
          redis.call('XADD', KEYS[5], '*', 'type', 'request.completed', 'job', job_ids[j], event_field, doc)
        end
        if it[7] == 'max_attempts_exceeded' then
          redis.call('HSET', job, 'dl:' .. rid, line_id)  -- lets an operator requeue it
        end
        unfinished[m] = (unfinished[m] or 0) + 1
        n = n + 1
      end
    end
    if n > 0 then
      hset_all(reqs, marks)
      for field, delta in pairs(incr) do
        if delta ~= 0 then redis.call('HINCRBY', job, field, delta) end
      end
      if js == 'queued' then
        redis.call('HSET', job, 'status', 'in_progress', 'started_ms', now)
      end
      applied = applied + n
      redis.call('HINCRBY', KEYS[7], tenant or 'default', -n)
      local done = redis.call('HINCRBY', job, 'done', n)
      if done >= tonumber(redis.call('HGET', job, 'total')) then
        local final = final_status[js]
        redis.call('HSET', job, 'status', final, 'ended_ms', now)
        local h = redis.call('HMGET', job, 'id', 'total', 'succeeded', 'failed', 'cancelled', 'expired',
                             'prompt_tokens', 'completion_tokens', 'created_ms')
        local function num(v) return tonumber(v) or 0 end
        local event = cjson.encode({
          specversion = '1.0', id = h[1] .. '.' .. final .. '.' .. now, source = source,
          type = 'com.inferq.job.' .. final, subject = h[1], time = now_iso,
          datacontenttype = 'application/json',
          data = {
            id = h[1], object = 'job', status = final,
            request_counts = {total = num(h[2]), queued = 0, running = 0, succeeded = num(h[3]),
                              failed = num(h[4]), cancelled = num(h[5]), expired = num(h[6])},
            usage = {prompt_tokens = num(h[7]), completion_tokens = num(h[8])},
            created_at = math.floor(num(h[9]) / 1000), ended_at = math.floor(tonumber(now) / 1000),
            results_url = '/v1/jobs/' .. h[1] .. '/results'
          }
        })
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'type', 'job.' .. final, 'job', h[1], event_field, event)
        -- the fan-out's work queue: never capped (unread entries would be lost), trimmed once acknowledged
        redis.call('XADD', KEYS[5], '*', 'type', 'job.' .. final, 'job', h[1], event_field, event)
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
local total = 0
for m, n in pairs(unfinished) do
  redis.call('HINCRBY', KEYS[flow_base + m], 'unfinished', -n)
  total = total + n
end
if total > 0 then redis.call('DECRBY', KEYS[3], total) end
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
-- KEYS: dead stream, job, reqs, job results, flow, backlog total, staging queue, staging ring,
--       tenant backlog hash.
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
redis.call('HINCRBY', KEYS[9], redis.call('HGET', KEYS[2], 'tenant') or 'default', 1)
if redis.call('RPUSH', KEYS[7], ARGV[4]) == 1 then redis.call('RPUSH', KEYS[8], KEYS[7]) end
redis.call('HINCRBY', KEYS[5], ARGV[5], 1)
redis.call('XDEL', KEYS[1], ARGV[1])
return {'ok', st}
"""
