-- Record the planner's estimates on unfinished jobs, and announce each deadline at risk once.
-- KEYS: events stream, webhook events stream, then one job hash per op.
-- ARGV: now ms, events stream's approximate bound, event field, webhook events stream's bound,
--       msgpack ops, each {eta ms (0: unknown), at risk (0/1), the job.deadline_at_risk document}.
-- Guarantees: only a job still running or stopping is written (a finished or expired job's hash is
-- never recreated or extended); a job's at-risk event is appended at most once (F.AT_RISK_MS set in
-- the same step), to the events stream and, below the webhook events stream's bound (as the
-- collector's job events), to the webhook fan-out's. Returns the number of events appended.
local events, webhook_events = KEYS[1], KEYS[2]
local now, maxlen, field, hooks_bound = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ops = cmsgpack.unpack(ARGV[5])
local fired = 0
local hooks_len = nil
for i, op in ipairs(ops) do
  local job = KEYS[2 + i]
  local st, id, flagged = unpack(redis.call('HMGET', job, F.STATUS, F.ID, F.AT_RISK_MS))
  if RUNNING[st] or STOPPING[st] then
    if op[1] > 0 then
      redis.call('HSET', job, F.ETA_MS, op[1], F.AT_RISK, op[2])
    else
      redis.call('HDEL', job, F.ETA_MS, F.AT_RISK)
    end
    if op[2] == 1 and not flagged and RUNNING[st] then
      redis.call('HSET', job, F.AT_RISK_MS, now)
      redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'type', 'job.deadline_at_risk', 'job', id, field, op[3])
      if hooks_len == nil then hooks_len = redis.call('XLEN', webhook_events) end
      if hooks_len < hooks_bound then
        redis.call('XADD', webhook_events, '*', 'type', 'job.deadline_at_risk', 'job', id, field, op[3])
        hooks_len = hooks_len + 1
      end
      fired = fired + 1
    end
  end
end
return fired
