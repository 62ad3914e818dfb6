-- uses: staging
-- Give a dead-lettered request another chance: undo its `max_attempts_exceeded` failure (the
-- job's counts and its result line), reopen a completed job, and stage the request again.
-- A reopened job remembers when it had ended (F.REOPENED): its requests hash was deleted then, so
-- only requests marked requeued may start or count again (a late copy of another is ignored).
-- A reopened job gets a new completion window as long as its first one, from now, so it cannot
-- wait forever (the expiry sweep reads the deadlines set).
-- KEYS: dead stream, job, reqs, job results, flow, backlog total, staging queue, staging ring,
--       tenant backlog hash, deadlines.
-- ARGV: dead entry id, request_id, model, payload, lane, now ms, job id.
-- Returns {'ok', status before}, {'gone', ''}, {'stopped', status} (its job is being stopped or
-- ended otherwise) or {'not_failed', status} (no recorded dead-letter failure to undo).
local dead, job, reqs, results, flow, backlog, queue, ring, tenant_backlog, deadlines =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local dead_id, rid, model, payload, lane, now_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local job_id = ARGV[7]
local st = redis.call('HGET', job, F.STATUS)
if not st then return {'gone', ''} end
if not RUNNING[st] and st ~= JOB.COMPLETED then return {'stopped', st} end
local line = redis.call('HGET', job, dead_letter_field(rid))
if not line then return {'not_failed', st} end
redis.call('XDEL', results, line)
redis.call('HDEL', job, dead_letter_field(rid))
redis.call('HINCRBY', job, REQUEST.FAILED, -1)
redis.call('HINCRBY', job, model_field(model, REQUEST.FAILED), -1)
redis.call('HINCRBY', job, F.DONE, -1)
redis.call('HSET', reqs, rid, REQ_MARK.REQUEUED)
if st == JOB.COMPLETED then
  redis.call('HSET', job, F.STATUS, JOB.IN_PROGRESS, F.REOPENED, redis.call('HGET', job, F.ENDED_MS) or '0')
  redis.call('HDEL', job, F.ENDED_MS)
  local created = tonumber(redis.call('HGET', job, F.CREATED_MS) or now_ms)
  local window = math.max(0, tonumber(redis.call('HGET', job, F.EXPIRES_MS) or now_ms) - created)
  redis.call('HSET', job, F.EXPIRES_MS, now_ms + window)
  redis.call('ZADD', deadlines, now_ms + window, job_id)
  redis.call('PERSIST', job)
  redis.call('PERSIST', results)
end
redis.call('HINCRBY', flow, F.UNFINISHED, 1)
redis.call('INCRBY', backlog, 1)
redis.call('HINCRBY', tenant_backlog, redis.call('HGET', job, F.TENANT) or 'default', 1)
stage(queue, ring, flow, lane, {payload})
redis.call('XDEL', dead, dead_id)
return {'ok', st}
