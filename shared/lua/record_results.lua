-- uses: hash keys
-- Apply a batch of results, grouped by job, and acknowledge their results-stream entries.
-- KEYS: results stream, events stream, backlog total, deadlines, webhook events stream, set of
--       endpoints subscribed to request events, tenant backlog hash, webhook events dropped
--       counter, then (job, reqs, job results) per job, then the flow hash of each model.
-- ARGV: group, now_ms, now_rfc3339, ttl_s, events_maxlen, event_source, event_field, then msgpack
--       {ack ids, model names (in flow-key order), per job: list of (request_id, model index,
--       status, prompt_tokens, completion_tokens, line, error code), job ids (in KEYS order)},
--       then the webhook events stream's bound.
-- Guarantees: each request's result counts once (its reqs mark turns 'd'); results of a finished
-- or missing job are only acknowledged. Each applied result appends its request.completed event,
-- and the last one of a job ends the job (FINAL_OF its status) and appends the job's event, to the
-- events stream (and the webhook events stream); the documents are the bytes shared/events.py
-- builds. The webhook events stream (the fan-out's work queue) is never trimmed here, so no unread
-- event is lost; instead, at 90% of its bound a request event is not added, at the bound a job
-- event neither, and each refused one is counted. Counters are summed in Lua and written once per job and field: per-result Redis calls
-- are only the duplicate check (one HMGET per job) and the result line's XADD.
local results_stream, events, backlog, deadlines, webhook_events, request_subscribers, tenant_backlog, hooks_dropped =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local group, now, now_iso, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local maxlen, source, event_field = ARGV[5], ARGV[6], ARGV[7]
local batch = cmsgpack.unpack(ARGV[8])
local acks, models, jobs, job_ids = batch[1], batch[2], batch[3], batch[4]
local hooks_bound = tonumber(ARGV[9])
local job_keys = key_groups(9, 3, #jobs)
local flows = key_groups(9 + 3 * #jobs, 1)
for i = 1, #acks, 500 do
  redis.call('XACK', results_stream, group, unpack(acks, i, math.min(i + 499, #acks)))
end

-- The job.<status> CloudEvent, field by field in the order of shared.events.JobEvent.
local function job_event(h, final, ended)
  local function n(v) return v or '0' end
  return '{"specversion":"1.0","id":"' .. h[1] .. '.' .. final .. '.' .. ended .. '","source":"' .. source ..
    '","type":"com.inferq.job.' .. final .. '","subject":"' .. h[1] .. '","time":"' .. now_iso ..
    '","datacontenttype":"application/json","data":{"id":"' .. h[1] .. '","object":"job","status":"' .. final ..
    '","request_counts":{"total":' .. n(h[2]) .. ',"' .. JOB.QUEUED .. '":0,"' .. F.RUNNING .. '":0,"' .. REQUEST.SUCCEEDED .. '":' .. n(h[3]) ..
    ',"' .. REQUEST.FAILED .. '":' .. n(h[4]) .. ',"' .. REQUEST.CANCELLED .. '":' .. n(h[5]) ..
    ',"' .. REQUEST.EXPIRED .. '":' .. n(h[6]) .. '},"usage":{"prompt_tokens":' .. n(h[7]) ..
    ',"completion_tokens":' .. n(h[8]) .. '},"created_at":' .. string.format('%d', math.floor(tonumber(n(h[9])) / 1000)) ..
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
local unfinished = {}
local applied = 0
local finished = {}
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
          local f = model_field(model, F.RUNNING)
          incr[f] = (incr[f] or 0) - 1
        end
        incr[status] = (incr[status] or 0) + 1
        local f = model_field(model, status)
        incr[f] = (incr[f] or 0) + 1
        if it[4] > 0 then incr[F.PROMPT_TOKENS] = (incr[F.PROMPT_TOKENS] or 0) + it[4] end
        if it[5] > 0 then incr[F.COMPLETION_TOKENS] = (incr[F.COMPLETION_TOKENS] or 0) + it[5] end
        local line_id = redis.call('XADD', res, '*', 'l', it[6])
        -- the request.completed CloudEvent (same bytes as shared.events.request_event_json)
        local doc = '{"specversion":"1.0","id":"' .. rid .. '.' .. line_id .. '","source":"' .. source ..
          '","type":"com.inferq.request.completed","subject":"' .. job_ids[j] .. '","time":"' .. now_iso ..
          '","datacontenttype":"application/json","data":' .. it[6] .. '}'
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
        local event = job_event(h, final, ended)
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
if hooks_refused > 0 then redis.call('INCRBY', hooks_dropped, hooks_refused) end
return {applied, finished}
