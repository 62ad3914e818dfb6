-- Hand a due webhook delivery to an attempt: move it `lease` later in the due set.
-- KEYS: due set. ARGV: delivery id, the score it was read with, the new score.
-- Guarantees: a delivery rescheduled since it was read (its score moved) is left alone.
local due, id, seen, lease_until = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if tonumber(redis.call('ZSCORE', due, id)) == tonumber(seen) then
  return redis.call('ZADD', due, 'XX', lease_until, id)
end
return 0
