-- Record why a sink could not take its events (shown until the next success).
-- KEYS: the sink's hash, the sink's lease. ARGV: holder, error, now ms.
-- Returns 1 when recorded, 0 when not the holder.
local sink, lease = KEYS[1], KEYS[2]
if redis.call('GET', lease) ~= ARGV[1] then
  return 0
end
redis.call('HSET', sink, SINK.ERROR, ARGV[2], SINK.ERROR_MS, ARGV[3], SINK.HOLDER, ARGV[1])
redis.call('HSETNX', sink, SINK.FAILING_SINCE_MS, ARGV[3])
return 1
