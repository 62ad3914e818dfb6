-- uses: staging lanes
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

local function feed(ring, lane, stream, budget)
  return take_turns(ring, flow, lane, budget, quantum, function(item) redis.call('XADD', stream, '*', field, item) end)
end

local bi, bb = lane_backlog(interactive, group), lane_backlog(batch, group)
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
