-- A tenant's request-rate token bucket.
-- KEYS: the bucket hash. ARGV: rate per s, burst, cost, now ms.
-- Guarantees: refills at `rate` up to `burst`, takes `cost` tokens only if all are there, and
-- expires an idle bucket once it would be full anyway. Returns {granted (0/1), tokens left}.
local bucket = KEYS[1]
local rate, burst, cost, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', bucket, 'tokens', 'ms')
local tokens, ms = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ms) * rate / 1000)
local ok = 0
if tokens >= cost then tokens = tokens - cost; ok = 1 end
redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ms', now)
redis.call('PEXPIRE', bucket, math.ceil(burst / rate * 1000) + 1000)
return {ok, tostring(tokens)}
