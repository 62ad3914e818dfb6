-- Give entries back to the group as new, unread entries, so any consumer takes them at once
-- instead of waiting for a reclaim; an entry may come back as several (a batch split up).
-- KEYS: the stream. ARGV: group, payload field, msgpack list of (entry id, payloads).
-- Guarantees: only entries still pending here are re-added, each payload as one new entry, in the
-- step that acknowledges the old one. Returns how many entries were given back.
local stream, group, field = KEYS[1], ARGV[1], ARGV[2]
local n = 0
for _, entry in ipairs(cmsgpack.unpack(ARGV[3])) do
  if redis.call('XACK', stream, group, entry[1]) == 1 then
    for _, payload in ipairs(entry[2]) do redis.call('XADD', stream, '*', field, payload) end
    n = n + 1
  end
end
return n
