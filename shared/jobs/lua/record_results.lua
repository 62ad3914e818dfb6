-- uses: hash keys
-- Apply a batch of results, grouped by job, and acknowledge their results-stream entries.
-- KEYS: results stream, events stream, backlog total, deadlines, webhook events stream, set of
--       endpoints subscribed to request events, tenant backlog hash, webhook events dropped
--       counter, the spend hashes of the current UTC day and month, then (job, reqs, job results)
--       per job, then the flow hash of each model.
-- ARGV: group, now_ms, now_rfc3339, ttl_s, events_maxlen, event_source, event_field, then msgpack
--       {ack ids, model names (in flow-key order), per job: list of (request_id, model index,
--       status, prompt_tokens, completion_tokens, line, error code, serving model ('' when it
--       never ran), busy µs, cost micro-dollars), job ids (in KEYS order)}, then the webhook events
--       stream's bound, the day and month spend hashes' TTLs (s).
-- Guarantees: each request's result counts once (its reqs mark turns 'd'); results of a finished
-- or missing job are only acknowledged. Each applied result appends its request.completed event,
-- and the last one of a job ends the job (FINAL_OF its status) and appends the job's event, to the
-- events stream (and the webhook events stream); the documents are the bytes shared/wire/events.py
-- builds. The webhook events stream (the fan-out's work queue) is never trimmed here, so no unread
-- event is lost; instead, at 90% of its bound a request event is not added, at the bound a job
-- event neither, and each refused one is counted. Counters are summed in Lua and written once per job and field: per-result Redis calls
-- are only the duplicate check (one HMGET per job) and the result line's XADD.
-- Cost: each applied result's busy µs and micro-dollars are added to the job's totals and to its
-- serving model's fields (U.*; counts per requested model stay keyed by the requested model),
-- and its micro-dollars to `<tenant> <serving model>` of the day's and the month's spend hashes
-- (one HINCRBY per field and batch, each hash given its TTL).
local results_stream, events, backlog, deadlines, webhook_events, request_subscribers, tenant_backlog, hooks_dropped =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local group, now, now_iso, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local maxlen, source, event_field = ARGV[5], ARGV[6], ARGV[7]
local batch = cmsgpack.unpack(ARGV[8])
local acks, models, jobs, job_ids = batch[1], batch[2], batch[3], batch[4]
local hooks_bound = tonumber(ARGV[9])
local spend_day, spend_month = KEYS[9], KEYS[10]
local spend_day_ttl, spend_month_ttl = ARGV[10], ARGV[11]
local job_keys = key_groups(11, 3, #jobs)
local flows = key_groups(11 + 3 * #jobs, 1)
for i = 1, #acks, 500 do
  redis.call('XACK', results_stream, group, unpack(acks, i, math.min(i + 499, #acks)))
end

-- msgspec's JSON of round(n / 1e6, 6) for an integer n >= 0 (below 2^53): micro-dollars as USD,
-- µs as seconds. Like msgspec: the shortest digits, `.0` after a whole number, an exponent below 1e-5.
local function micros_json(n)
  if n == 0 then return '0.0' end
  if n < 10 then return string.format('%de-6', n) end
  local whole, frac = math.floor(n / 1000000), n % 1000000
  if frac == 0 then return string.format('%d.0', whole) end
  local digits = string.gsub(string.format('%06d', frac), '0+$', '')
  return string.format('%d', whole) .. '.' .. digits
end

-- Byte order, as Python sorts model names (Lua's `<` on strings follows the server's locale).
local function bytes_less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- The job's usage as shared.wire.api.JobUsage encodes it: tokens, busy time and cost, then per serving
-- model in name order (its fields: model_field(model, U.*)).
local function usage_json(job)
  local flat = redis.call('HGETALL', job)
  local h, served = {}, {}
  local suffix = ':' .. U.SERVED
  for i = 1, #flat, 2 do
    local f = flat[i]
    h[f] = flat[i + 1]
    if string.sub(f, 1, 2) == 'm:' and #f > 2 + #suffix and string.sub(f, -#suffix) == suffix then
      served[#served + 1] = string.sub(f, 3, -#suffix - 1)
    end
  end
  table.sort(served, bytes_less)
  local function int(f) return tonumber(h[f] or '0') end
  local parts = {}
  for i, m in ipairs(served) do
    parts[i] = '"' .. m .. '":{"requests":' .. string.format('%d', int(model_field(m, U.SERVED))) ..
      ',"gpu_seconds":' .. micros_json(int(model_field(m, U.BUSY_US))) ..
      ',"cost":' .. micros_json(int(model_field(m, U.COST_MICROS))) .. '}'
  end
  return '{"prompt_tokens":' .. string.format('%d', int(F.PROMPT_TOKENS)) ..
    ',"completion_tokens":' .. string.format('%d', int(F.COMPLETION_TOKENS)) ..
    ',"gpu_seconds":' .. micros_json(int(U.BUSY_US)) .. ',"cost":' .. micros_json(int(U.COST_MICROS)) ..
    ',"by_model":{' .. table.concat(parts, ',') .. '}}'
end

-- The job.<status> CloudEvent, field by field in the order of shared.wire.events.JobEvent.
local function job_event(h, final, ended, usage)
  local function n(v) return v or '0' end
  return '{"specversion":"1.0","id":"' .. h[1] .. '.' .. final .. '.' .. ended .. '","source":"' .. source ..
    '","type":"com.inferq.job.' .. final .. '","subject":"' .. h[1] .. '","time":"' .. now_iso ..
    '","datacontenttype":"application/json","data":{"id":"' .. h[1] .. '","object":"job","status":"' .. final ..
    '","request_counts":{"total":' .. n(h[2]) .. ',"' .. JOB.QUEUED .. '":0,"' .. F.RUNNING .. '":0,"' .. REQUEST.SUCCEEDED .. '":' .. n(h[3]) ..
    ',"' .. REQUEST.FAILED .. '":' .. n(h[4]) .. ',"' .. REQUEST.CANCELLED .. '":' .. n(h[5]) ..
    ',"' .. REQUEST.EXPIRED .. '":' .. n(h[6]) .. '},"usage":' .. usage ..
    ',"created_at":' .. string.format('%d', math.floor(tonumber(n(h[9])) / 1000)) ..
    ',"ended_at":' .. string.format('%d', math.floor(tonumber(ended) / 1000)) ..
    ',"results_url":"/v1/jobs/' .. h[1] .. '/results"}}'
end

-- request events go to the webhook fan-out only while an endpoint wants them
local hooks_all_requests = redis.call('SCARD', request_subscribers) > 0
-- the fan-out's work queue: length checked once, then counted here; a refused event is counted
local hooks_len, hooks_refused = redis.call('XLEN', webhook_events), 0
local function to_webhooks(limit, etype, job_id, doc)
  if hooks_len >= limit then
    hooks_refused = hooks_refused + 1
  else
    redis.call('XADD', webhook_events, '*', 'type', etype, 'job', job_id, event_field, doc)
    hooks_len = hooks_len + 1
  end
end
-- model_field, formatted once per (model, name) and call: a batch names few of them
local fields_of = {}
local function field_of(model, name)
  local per_model = fields_of[model]
  if not per_model then
    per_model = {}
    fields_of[model] = per_model
  end
  local f = per_model[name]
  if not f then
    f = model_field(model, name)
    per_model[name] = f
  end
  return f
end
local unfinished = {}
local applied = 0
local finished = {}
local spend = {}  -- spend_field(tenant, serving model) -> micro-dollars, this batch
for j = 1, #jobs do
  local job, reqs, res = job_keys[j][1], job_keys[j][2], job_keys[j][3]
  local items = jobs[j]
  local js, job_wants_requests, tenant, reopened =
    unpack(redis.call('HMGET', job, F.STATUS, F.WEBHOOK_REQUESTS, F.TENANT, F.REOPENED))
  local hook_requests = hooks_all_requests or job_wants_requests == '1'
  if FINAL_OF[js] then
    local rids = {}
    for i = 1, #items do rids[i] = items[i][1] end
    local states = hmget_all(reqs, rids)
    local marks, incr, seen = {}, {}, {}
    local n = 0
    -- what every request event of this job holds between its id and its data
    local event_middle = '","source":"' .. source .. '","type":"com.inferq.request.completed","subject":"' ..
      job_ids[j] .. '","time":"' .. now_iso .. '","datacontenttype":"application/json","data":'
    for i = 1, #items do
      local it = items[i]
      local rid, m, status = it[1], it[2], it[3]
      local model = models[m]
      -- in a reopened job only the requeued requests have a state: others finished before
      if states[i] ~= REQ_MARK.DONE and (states[i] or not reopened) and not seen[rid] then
        seen[rid] = true
        marks[#marks + 1] = rid
        marks[#marks + 1] = REQ_MARK.DONE
        if states[i] == REQ_MARK.RUNNING then
          incr[F.RUNNING] = (incr[F.RUNNING] or 0) - 1
          local f = field_of(model, F.RUNNING)
          incr[f] = (incr[f] or 0) - 1
        end
        incr[status] = (incr[status] or 0) + 1
        local f = field_of(model, status)
        incr[f] = (incr[f] or 0) + 1
        if it[4] > 0 then incr[F.PROMPT_TOKENS] = (incr[F.PROMPT_TOKENS] or 0) + it[4] end
        if it[5] > 0 then incr[F.COMPLETION_TOKENS] = (incr[F.COMPLETION_TOKENS] or 0) + it[5] end
        local served, busy_us, cost = it[8], it[9], it[10]
        if served ~= '' then  -- it ran: charged to the model that served it
          local sf = field_of(served, U.SERVED)
          incr[sf] = (incr[sf] or 0) + 1
          if busy_us > 0 then
            local bf = field_of(served, U.BUSY_US)
            incr[bf] = (incr[bf] or 0) + busy_us
            incr[U.BUSY_US] = (incr[U.BUSY_US] or 0) + busy_us
          end
          if cost > 0 then
            local cf = field_of(served, U.COST_MICROS)
            incr[cf] = (incr[cf] or 0) + cost
            incr[U.COST_MICROS] = (incr[U.COST_MICROS] or 0) + cost
            local who = spend_field(tenant or 'default', served)
            spend[who] = (spend[who] or 0) + cost
          end
        end
        local line_id = redis.call('XADD', res, '*', 'l', it[6])
        -- the request.completed CloudEvent (same bytes as shared.wire.events.request_event_json)
        local doc = '{"specversion":"1.0","id":"' .. rid .. '.' .. line_id .. event_middle .. it[6] .. '}'
        redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'type', 'request.completed', 'job', job_ids[j], event_field, doc)
        if hook_requests then
          to_webhooks(math.floor(hooks_bound * 0.9), 'request.completed', job_ids[j], doc)
        end
        if it[7] == 'max_attempts_exceeded' then
          redis.call('HSET', job, dead_letter_field(rid), line_id)  -- lets an operator requeue it
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
      if js == JOB.QUEUED then
        redis.call('HSET', job, F.STATUS, JOB.IN_PROGRESS, F.STARTED_MS, now)
      end
      applied = applied + n
      redis.call('HINCRBY', tenant_backlog, tenant or 'default', -n)
      local done = redis.call('HINCRBY', job, F.DONE, n)
      if done >= tonumber(redis.call('HGET', job, F.TOTAL)) then
        local final = FINAL_OF[js]
        -- a reopened job ends after it ended before, so the id of each end's event is new
        local ended = now
        if reopened and tonumber(reopened) >= tonumber(now) then ended = string.format('%d', tonumber(reopened) + 1) end
        redis.call('HSET', job, F.STATUS, final, F.ENDED_MS, ended)
        redis.call('HDEL', job, F.REOPENED)
        local h = redis.call('HMGET', job, F.ID, F.TOTAL, REQUEST.SUCCEEDED, REQUEST.FAILED, REQUEST.CANCELLED,
                             REQUEST.EXPIRED, F.PROMPT_TOKENS, F.COMPLETION_TOKENS, F.CREATED_MS)
        local event = job_event(h, final, ended, usage_json(job))
        redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'type', 'job.' .. final, 'job', h[1], event_field, event)
        to_webhooks(hooks_bound, 'job.' .. final, h[1], event)
        redis.call('ZREM', deadlines, h[1])
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
  redis.call('HINCRBY', flows[m][1], F.UNFINISHED, -n)
  total = total + n
end
if total > 0 then redis.call('DECRBY', backlog, total) end
if next(spend) then
  for who, micros in pairs(spend) do
    redis.call('HINCRBY', spend_day, who, micros)
    redis.call('HINCRBY', spend_month, who, micros)
  end
  redis.call('EXPIRE', spend_day, spend_day_ttl)
  redis.call('EXPIRE', spend_month, spend_month_ttl)
end
if hooks_refused > 0 then redis.call('INCRBY', hooks_dropped, hooks_refused) end
return {applied, finished}
