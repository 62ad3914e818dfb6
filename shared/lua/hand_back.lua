-- Give entries back to the group as new, unread entries (same payload), so any worker takes them
-- at once instead of waiting for a reclaim.
-- KEYS: the lane stream. ARGV: group, payload field, msgpack list of (entry id, payload).
-- Guarantees: only entries still pending here are re-added. Returns how many.
local stream, group, field = KEYS[1], ARGV[1], ARGV[2]
local n = 0
for _, entry in ipairs(cmsgpack.unpack(ARGV[3])) do
  if redis.call('XACK', stream, group, entry[1]) == 1 then
    redis.call('XADD', stream, '*', field, entry[2])
    n = n + 1
  end
end
return n
