-- The next events a sink should get, read at one instant with what the stream has dropped.
-- KEYS: the sink's hash, the events stream, the sink's lease.
-- ARGV: holder, count, where a new sink starts ('earliest' | 'latest').
-- Guarantees: only the lease holder reads (and sets a new sink's cursor); `lost` counts the entries
-- the stream trimmed past the cursor before they were read. The events stream is only ever trimmed
-- from its oldest end (MAXLEN), never has entries deleted, so the entry before its first one is
-- entry number `entries-added - length`; the cursor is entry number SEEN.
-- A stream that started again (deleted and written anew, or restored to an older state: fewer
-- entries ever added than the cursor has passed, or a cursor past its last id) sends the cursor
-- back to its oldest entry.
-- Returns {0} when another dispatcher holds the lease, else {1, cursor, lost, entries, reset}.
local sink, events, lease = KEYS[1], KEYS[2], KEYS[3]
local holder, count, start = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', lease) ~= holder then
  return {0}
end
local added, length, last = 0, 0, '0-0'
local info = redis.pcall('XINFO', 'STREAM', events)
if type(info) == 'table' and not info.err then
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = tonumber(info[i + 1])
    elseif info[i] == 'length' then length = tonumber(info[i + 1])
    elseif info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
local state = redis.call('HMGET', sink, SINK.CURSOR, SINK.SEEN)
local cursor, seen = state[1], tonumber(state[2])
if not cursor then
  if start == 'latest' then
    cursor, seen = last, added
  else
    cursor, seen = '0-0', added - length
  end
  redis.call('HSET', sink, SINK.CURSOR, cursor, SINK.SEEN, seen, SINK.DELIVERED, 0, SINK.LOST, 0, SINK.REJECTED, 0)
end
seen = tonumber(seen)
local function after(a, b)  -- stream id a > b
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if #ams ~= #bms then return #ams > #bms end
  if ams ~= bms then return ams > bms end
  return tonumber(aseq) > tonumber(bseq)
end
local reset = 0
if seen > added or after(cursor, last) then
  cursor, seen, reset = '0-0', added - length, 1
  redis.call('HSET', sink, SINK.CURSOR, cursor, SINK.SEEN, seen)
end
local lost = (added - length) - seen
if lost < 0 then lost = 0 end
return {1, cursor, lost, redis.call('XRANGE', events, '(' .. cursor, '+', 'COUNT', count), reset}
