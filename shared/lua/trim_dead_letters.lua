-- Apply the dead-letter retention: drop entries older than the age limit, then the oldest beyond
-- the count limit, and count what was dropped.
-- KEYS: dead-letter stream, dropped counter.
-- ARGV: oldest entry id kept by age (`<ms>-0`), most entries kept.
-- Guarantees: the counter moves by exactly the number of entries removed, in the same step.
-- Returns {removed by age, removed by count, entries kept}.
local dead, dropped = KEYS[1], KEYS[2]
local by_age = redis.call('XTRIM', dead, 'MINID', ARGV[1])
local by_count = redis.call('XTRIM', dead, 'MAXLEN', ARGV[2])
if by_age + by_count > 0 then redis.call('INCRBY', dropped, by_age + by_count) end
return {by_age, by_count, redis.call('XLEN', dead)}
