-- uses: staging
-- The router's feed of one model: move staged requests into its lane streams under flow control.
-- KEYS: interactive stream, batch stream, interactive ring, batch ring, flow.
-- ARGV: worker group, payload field, high watermark, low watermark, most to move, quantum.
-- Guarantees: the interactive lane is limited only by its own stream's backlog; the batch lane is
-- paused (flow `paused` = 1) once the backlog of both lanes reaches the high watermark, and resumed
-- below the low one; within a lane, jobs take turns. Returns {interactive moved, batch moved,
-- paused (0/1), staging queues still waiting}.
local interactive, batch, interactive_ring, batch_ring, flow = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, field = ARGV[1], ARGV[2]
local high, low, max_move, quantum = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

-- Backlog of a lane stream (unread + unacknowledged), dropping entries the group has acknowledged
-- so the stream's length tracks its backlog.
local function backlog(stream)
  if redis.call('EXISTS', stream) == 0 then return 0 end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local t = {}
    for k = 1, #g, 2 do t[g[k]] = g[k + 1] end
    if t['name'] == group then
      if t['pending'] > 0 then
        redis.call('XTRIM', stream, 'MINID', redis.call('XPENDING', stream, group)[2])
      else
        local ms, seq = string.match(t['last-delivered-id'], '^(%d+)-(%d+)$')
        redis.call('XTRIM', stream, 'MINID', ms .. '-' .. (tonumber(seq) + 1))
      end
      -- the stream now holds the pending and unread entries (and acknowledged ones between
      -- pending ones); the lag is unknown, or too high, after unread entries were deleted (moved
      -- to a fallback model: shared/lua/move_waiting.lua), so the smaller figure is the backlog
      local lag = redis.call('XLEN', stream) - t['pending']
      if t['lag'] and t['lag'] < lag then lag = t['lag'] end
      return lag + t['pending']
    end
  end
  return redis.call('XLEN', stream)
end

local function feed(ring, lane, stream, budget)
  return take_turns(ring, flow, lane, budget, quantum, function(item) redis.call('XADD', stream, '*', field, item) end)
end

local bi, bb = backlog(interactive), backlog(batch)
local moved_i = feed(interactive_ring, LANE.INTERACTIVE, interactive, math.min(max_move, high - bi))
local total = bi + bb + moved_i
local paused = redis.call('HGET', flow, F.PAUSED) == '1'
if paused and total < low then
  paused = false
  redis.call('HSET', flow, F.PAUSED, '0')
end
local moved_b = 0
if not paused then
  moved_b = feed(batch_ring, LANE.BATCH, batch, math.min(max_move, high - total))
  if total + moved_b >= high then
    paused = true
    redis.call('HSET', flow, F.PAUSED, '1')
  end
end
local waiting = redis.call('LLEN', interactive_ring) + redis.call('LLEN', batch_ring)
return {moved_i, moved_b, paused and 1 or 0, waiting}
