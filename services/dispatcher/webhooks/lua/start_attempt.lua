-- Start a taken webhook attempt: only its holder may, and only once (a sender run twice for one
-- token, as a job queue may do after a crash, sends once). Its lease is renewed to last the attempt.
-- KEYS: the delivery's attempt hash, due set, the endpoint's in-flight set.
-- ARGV: delivery id, token, now ms, lease ms, limit, defer ms.
-- Returns {'ok', lost} (lost: comma-separated start ms of earlier attempts whose sender never
-- recorded an outcome, or ''), {'not_holder', ''} (another holder took it after this one's lease
-- ended, or it was started already), or {'busy', ''} (its lease ended while it waited and its
-- endpoint filled up meanwhile: released, due again `defer` ms later).
local attempt, due, sending = KEYS[1], KEYS[2], KEYS[3]
local id, token = ARGV[1], ARGV[2]
local now, lease, limit, defer = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if redis.call('HGET', attempt, A.TOKEN) ~= token or redis.call('HEXISTS', attempt, A.STARTED) == 1 then
  return {'not_holder', ''}
end
redis.call('ZREMRANGEBYSCORE', sending, '-inf', now)
if not redis.call('ZSCORE', sending, id) and redis.call('ZCARD', sending) >= limit then
  redis.call('HDEL', attempt, A.TOKEN)
  redis.call('ZADD', due, 'XX', now + defer, id)
  return {'busy', ''}
end
redis.call('HSET', attempt, A.STARTED, now)
redis.call('PEXPIRE', attempt, lease + 86400000)
redis.call('ZADD', due, 'XX', now + lease, id)
redis.call('ZADD', sending, now + lease, id)
if redis.call('PTTL', sending) < lease then redis.call('PEXPIRE', sending, lease) end
return {'ok', redis.call('HGET', attempt, A.LOST) or ''}
