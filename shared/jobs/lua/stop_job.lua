-- uses: keys staging
-- Cancel or expire a job: mark it, and turn its staged requests into drop notices for the
-- collector, so they never reach a model stream. Requests already routed are dropped by the
-- worker that reads them; requests in flight finish.
-- KEYS: job, results stream, deadlines, stopping jobs, then (staging queue, staging ring, flow) per
--       model and lane.
-- ARGV: the stopping status (a key of STOPPING), now_ms, drop field, reason field, then msgpack:
--       the lane of each key group.
-- Returns {'ok', n dropped}, {'stopping', status} (already being stopped: idempotent),
-- {'finished', status} or {'missing', ''}.
local job, results_stream, deadlines, stopping_jobs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stopping, now, drop_field, reason_field = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local lanes = cmsgpack.unpack(ARGV[5])
local reason = STOPPING[stopping][2]
local st = redis.call('HGET', job, F.STATUS)
if not st then return {'missing', ''} end
if STOPPING[st] then return {'stopping', st} end
if not RUNNING[st] then return {'finished', st} end
redis.call('HSET', job, F.STATUS, stopping, F.STOP_MS, now)
local job_id = redis.call('HGET', job, F.ID)
redis.call('ZREM', deadlines, job_id)
redis.call('ZADD', stopping_jobs, now, job_id)  -- watched until it ends (services/dispatcher/stranded.py)
local dropped = 0
for g, staging in ipairs(key_groups(5, 3)) do
  local items = unstage_all(staging[1], staging[2], staging[3], lanes[g])
  for _, item in ipairs(items) do
    redis.call('XADD', results_stream, '*', drop_field, item, reason_field, reason)
  end
  dropped = dropped + #items
end
return {'ok', tostring(dropped)}
