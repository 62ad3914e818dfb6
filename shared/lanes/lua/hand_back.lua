-- Give entries back to the group as new, unread entries, so any consumer takes them at once
-- instead of waiting for a reclaim; an entry may come back as several (a bundle split up).
-- KEYS: the stream. ARGV: group, payload field, delivered field, msgpack list of (entry id,
-- payloads, deliveries so far: 0 for none to carry).
-- Guarantees: only entries still pending here are re-added, each payload as one new entry (with
-- the deliveries so far in the delivered field, when not 0), in the step that acknowledges the old
-- one. Returns how many entries were given back.
local stream, group, field, delivered = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local n = 0
for _, entry in ipairs(cmsgpack.unpack(ARGV[4])) do
  if redis.call('XACK', stream, group, entry[1]) == 1 then
    local times = entry[3] or 0
    for _, payload in ipairs(entry[2]) do
      if times > 0 then
        redis.call('XADD', stream, '*', field, payload, delivered, times)
      else
        redis.call('XADD', stream, '*', field, payload)
      end
    end
    n = n + 1
  end
end
return n
