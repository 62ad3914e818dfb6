-- The baseline the router is measured against: forward ingest entries to model streams, no staging.
-- KEYS: ingest stream, then the model streams. ARGV: group, payload field, then per ingest entry:
--   id, n, then (model stream index in KEYS, payload) x n.
-- Guarantees: an entry's requests are forwarded only if its XACK succeeds.
local i = 3
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local fresh = redis.call('XACK', KEYS[1], ARGV[1], id) == 1
  for _ = 1, n do
    if fresh then redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', ARGV[2], ARGV[i + 1]) end
    i = i + 2
  end
end
