-- Give a sink's lease up (a dispatcher stopping), so the next holder need not wait for it to expire.
-- KEYS: the sink's lease. ARGV: holder. Returns 1 when released, 0 when not the holder.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
