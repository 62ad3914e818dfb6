-- uses: hash keys
-- Mark requests as running, if their job still runs.
-- KEYS: (job, reqs) per job.
-- ARGV[1] now ms, ARGV[2] msgpack: per job, in KEYS order, a list of (request_id, model).
-- Returns, per job, one verdict per request: 'run', or why it must not run: the request status
-- its job's stop gives it (its job is being stopped), or 'gone' (finished or no longer exists).
-- Guarantees: each request is counted running once (a redelivery still answers 'run'); the first
-- start moves a queued job to in_progress. In a job reopened by a requeue only the requeued
-- requests run: a late copy of one that finished before answers 'gone'.
local now = ARGV[1]
local groups = cmsgpack.unpack(ARGV[2])
local out = {}
for g, job_keys in ipairs(key_groups(1, 2)) do
  local job, reqs, items = job_keys[1], job_keys[2], groups[g]
  local st, reopened = unpack(redis.call('HMGET', job, F.STATUS, F.REOPENED))
  local verdict = 'gone'
  if RUNNING[st] then verdict = 'run'
  elseif STOPPING[st] then verdict = STOPPING[st][2] end
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
      if states[i] == false and reopened then
        verdicts[i] = 'gone'
      elseif (states[i] == false or states[i] == REQ_MARK.REQUEUED) and not seen[rid] then
        seen[rid] = true
        marks[#marks + 1] = rid
        marks[#marks + 1] = REQ_MARK.RUNNING
        running[model] = (running[model] or 0) + 1
      end
    end
    if #marks > 0 then
      hset_all(reqs, marks)
      redis.call('HINCRBY', job, F.RUNNING, #marks / 2)
      for model, n in pairs(running) do redis.call('HINCRBY', job, model_field(model, F.RUNNING), n) end
      if st == JOB.QUEUED then redis.call('HSET', job, F.STATUS, JOB.IN_PROGRESS, F.STARTED_MS, now) end
    end
  end
end
return out
