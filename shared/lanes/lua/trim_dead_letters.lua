-- Apply the dead-letter retention: drop entries older than the age limit, then the oldest beyond
-- the count limit, and count what was dropped; then drop from the per-owner indexes every member
-- older than the oldest entry kept (members are entry ids padded to 20 + 20 digits, score = the
-- ms part), and forget tenants whose index is empty.
-- KEYS: dead-letter stream, dropped counter, tenants set, unattributed index, then one index per
--       tenant named in ARGV.
-- ARGV: oldest entry id kept by age (`<ms>-0`), most entries kept, then the tenants whose indexes
--       follow in KEYS.
-- Guarantees: the counter moves by exactly the number of entries removed, in the same step; no
-- index keeps a member older than the stream's oldest entry.
-- Returns {removed by age, removed by count, entries kept}.
local dead, dropped, tenants, unattributed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local by_age = redis.call('XTRIM', dead, 'MINID', ARGV[1])
local by_count = redis.call('XTRIM', dead, 'MAXLEN', ARGV[2])
if by_age + by_count > 0 then redis.call('INCRBY', dropped, by_age + by_count) end
local first = redis.call('XRANGE', dead, '-', '+', 'COUNT', 1)[1]
local first_ms, first_member
if first then
  local ms, seq = string.match(first[1], '^(%d+)-(%d+)$')
  first_ms = ms
  first_member = string.rep('0', 20 - #ms) .. ms .. '-' .. string.rep('0', 20 - #seq) .. seq
end
local function trim(index)
  if not first then
    redis.call('DEL', index)
    return
  end
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. first_ms)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', index, first_ms, first_ms)) do
    if member < first_member then redis.call('ZREM', index, member) end
  end
end
trim(unattributed)
for i = 5, #KEYS do
  trim(KEYS[i])
  if redis.call('ZCARD', KEYS[i]) == 0 then redis.call('SREM', tenants, ARGV[i - 2]) end
end
return {by_age, by_count, redis.call('XLEN', dead)}
