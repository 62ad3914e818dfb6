-- Take over the unacknowledged entries of a consumer that is no longer alive.
-- KEYS: the stream, the dead consumer's heartbeat key.
-- ARGV: group, dead consumer, taker, min idle ms, most entries to take.
-- Guarantees: nothing is taken while the heartbeat key exists (checked in this same step), so a
-- live consumer keeps its entries however long it runs; only entries idle for at least min idle ms
-- are taken, and each is claimed by one taker (XCLAIM resets its idle time and owner). Entries
-- deleted from the stream meanwhile leave the pending list without being returned.
-- Returns a list of {entry id, flat field list, delivery count (this one included)}.
local stream, heartbeat = KEYS[1], KEYS[2]
local group, dead, taker, min_idle, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', heartbeat) == 1 then return {} end
local rows = redis.call('XPENDING', stream, group, 'IDLE', min_idle, '-', '+', count, dead)
if #rows == 0 then return {} end
local ids, times = {}, {}
for i, row in ipairs(rows) do
  ids[i] = row[1]
  times[row[1]] = row[4]
end
local out = {}
for _, e in ipairs(redis.call('XCLAIM', stream, group, taker, min_idle, unpack(ids))) do
  if e and e[2] then out[#out + 1] = {e[1], e[2], times[e[1]] + 1} end
end
return out
