-- The autoscaler's leader lease.
-- KEYS: the lease key. ARGV: this dispatcher's name, lease length ms.
-- Guarantees: takes the lease if free, renews it if ours, never takes it from another holder.
-- Returns 1 while we lead, else 0.
local lease, me, ttl_ms = KEYS[1], ARGV[1], ARGV[2]
local holder = redis.call('GET', lease)
if holder == false or holder == me then
  redis.call('SET', lease, me, 'PX', ttl_ms)
  return 1
end
return 0
