-- Move a sink's cursor past events the sink acknowledged (or its filter skipped).
-- KEYS: the sink's hash, the sink's lease.
-- ARGV: holder, the cursor the batch was read from, the new cursor, entries passed (lost ones
--       included), delivered, lost, rejected, now ms.
-- Guarantees: only the lease holder moves the cursor, and only from where it read it: a
-- dispatcher that lost the lease while it delivered cannot move the cursor back or count twice.
-- Returns 1 when moved, 0 when not the holder, -1 when the cursor moved meanwhile.
local sink, lease = KEYS[1], KEYS[2]
local holder, from, to = ARGV[1], ARGV[2], ARGV[3]
local passed, delivered, lost, rejected = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('GET', lease) ~= holder then
  return 0
end
if redis.call('HGET', sink, SINK.CURSOR) ~= from then
  return -1
end
redis.call('HSET', sink, SINK.CURSOR, to, SINK.HOLDER, holder)
redis.call('HINCRBY', sink, SINK.SEEN, passed)
if delivered > 0 then
  redis.call('HINCRBY', sink, SINK.DELIVERED, delivered)
  redis.call('HSET', sink, SINK.DELIVERED_MS, ARGV[8])
end
if lost > 0 then redis.call('HINCRBY', sink, SINK.LOST, lost) end
if rejected > 0 then redis.call('HINCRBY', sink, SINK.REJECTED, rejected) end
redis.call('HDEL', sink, SINK.ERROR, SINK.ERROR_MS, SINK.FAILING_SINCE_MS)
return 1
