-- uses: staging lanes
-- The router's feed of one model: move staged requests into its lane streams under flow control.
-- KEYS: interactive stream, batch stream, interactive ring, batch ring, flow, interactive urgent
--       queues, batch urgent queues.
-- ARGV: worker group, payload field, high watermark, low watermark, most entries to move, quantum,
--       requests per batch-lane entry.
-- Guarantees: the interactive lane is limited only by its own stream's backlog; the batch lane is
-- paused (flow `paused` = 1) once the backlog of both lanes reaches the high watermark, and resumed
-- below the low one (backlogs and watermarks count entries); within a lane, jobs take turns, the
-- earliest deadline three turns in four (lib/staging.lua take_turns), a batch-lane entry carrying
-- up to that many requests of the job whose turn it is. Returns
-- {interactive requests moved, batch requests moved, paused (0/1), staging queues still waiting}.
local interactive, batch, interactive_ring, batch_ring, flow = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local urgent = {[interactive_ring] = KEYS[6], [batch_ring] = KEYS[7]}
local group, field = ARGV[1], ARGV[2]
local high, low, max_move, quantum = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local per_batch = tonumber(ARGV[7])

-- feed a lane; returns {requests moved, entries added}
local function feed(ring, lane, stream, budget, per)
  local entries = 0
  local moved = take_turns(ring, urgent[ring], flow, lane, budget, quantum, per, function(items)
    entries = entries + append_requests(stream, field, items, 1, #items, per)
  end)
  return moved, entries
end

local bi, bb = lane_backlog(interactive, group), lane_backlog(batch, group)
local moved_i, entries_i = feed(interactive_ring, LANE.INTERACTIVE, interactive, math.min(max_move, high - bi), 1)
local total = bi + bb + entries_i
local paused = redis.call('HGET', flow, F.PAUSED) == '1'
if paused and total < low then
  paused = false
  redis.call('HSET', flow, F.PAUSED, '0')
end
local moved_b, entries_b = 0, 0
if not paused then
  moved_b, entries_b = feed(batch_ring, LANE.BATCH, batch, math.min(max_move, high - total), per_batch)
  if total + entries_b >= high then
    paused = true
    redis.call('HSET', flow, F.PAUSED, '1')
  end
end
local waiting = redis.call('LLEN', interactive_ring) + redis.call('LLEN', batch_ring)
return {moved_i, moved_b, paused and 1 or 0, waiting}
