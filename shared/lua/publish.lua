-- A worker publishes what became of a batch of model-stream entries.
-- KEYS: the model's lane streams..., results stream, dead-letter stream.
-- ARGV: group, payload field, drop field, reason field, meta field, then msgpack: a list of
--   (lane stream index, entry id, result ('' none), dropped request ('' none), drop reason,
--    dead-letter payload ('' none), dead-letter meta) per entry.
-- Guarantees: an entry's result, drop notice and dead letter are appended exactly when its XACK
-- succeeds; nothing happens for an entry no longer pending here (another worker reclaimed it).
-- Returns how many entries were published.
local results, dead = KEYS[#KEYS - 1], KEYS[#KEYS]
local group, pf, xf, rf, mf = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local outcomes = cmsgpack.unpack(ARGV[6])
local published = 0
for i = 1, #outcomes do
  local o = outcomes[i]
  if redis.call('XACK', KEYS[o[1]], group, o[2]) == 1 then
    if o[3] ~= '' then redis.call('XADD', results, '*', pf, o[3]) end
    if o[4] ~= '' then redis.call('XADD', results, '*', xf, o[4], rf, o[5]) end
    if o[6] ~= '' then redis.call('XADD', dead, '*', pf, o[6], mf, o[7]) end
    published = published + 1
  end
end
return published
