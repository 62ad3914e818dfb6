-- uses: keys
-- Take due webhook deliveries for attempts, each only if it is still due at the score it was read
-- with and its endpoint has fewer than `limit` attempts in flight.
-- KEYS: due set, attempt counter, then (the delivery's attempt hash, its endpoint's in-flight set)
--       per delivery.
-- ARGV: now ms, lease ms, limit, defer ms, msgpack list of (delivery id, score read).
-- Returns one value per delivery: the attempt's token (> 0); 0 when it is no longer due at that
-- score (another dispatcher took it, it was rescheduled or it ended); -1 when its endpoint was at
-- its limit (due again `defer` ms later).
-- Guarantees: one holder per due time. A taken delivery's due score becomes the end of its lease,
-- so it falls due again only if its holder never records an outcome (its sender died); a lease
-- that ends also frees the endpoint slot (only unexpired leases are counted), and if its attempt
-- had started, the next holder is told when (A.LOST), so the history keeps it.
local due, seq = KEYS[1], KEYS[2]
local now, lease, limit, defer = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local items = cmsgpack.unpack(ARGV[5])
local targets = key_groups(3, 2)
local keep = lease + 86400000  -- an attempt hash outlives its lease, so a late sender is still recognised
local out = {}
for i = 1, #items do
  local id, seen = items[i][1], tonumber(items[i][2])
  local attempt, sending = targets[i][1], targets[i][2]
  local score = tonumber(redis.call('ZSCORE', due, id))
  out[i] = 0
  if score and score == seen and score <= now then
    redis.call('ZREMRANGEBYSCORE', sending, '-inf', now)
    if redis.call('ZCARD', sending) >= limit then
      redis.call('ZADD', due, 'XX', now + defer, id)
      out[i] = -1
    else
      local token = redis.call('INCR', seq)
      local started = redis.call('HGET', attempt, A.STARTED)
      if started then
        local lost = redis.call('HGET', attempt, A.LOST)
        redis.call('HSET', attempt, A.LOST, lost and (lost .. ',' .. started) or started)
        redis.call('HDEL', attempt, A.STARTED)
      end
      redis.call('HSET', attempt, A.TOKEN, token)
      redis.call('PEXPIRE', attempt, keep)
      redis.call('ZADD', due, 'XX', now + lease, id)
      redis.call('ZADD', sending, now + lease, id)
      if redis.call('PTTL', sending) < lease then redis.call('PEXPIRE', sending, lease) end
      out[i] = token
    end
  end
end
return out
