-- A model's lane streams under flow control: how much each may still take.

-- Backlog of a lane stream (unread + unacknowledged) for the worker group `group`, dropping
-- entries the group has acknowledged so the stream's length tracks its backlog.
local function lane_backlog(stream, group)
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

-- A counter of what the lane streams of a call may still take: `room(direct, ring, flow, lane, n)`
-- answers how many of `n` requests of `lane` go straight to their stream now, as feed.lua would
-- move them (direct = {interactive stream, batch stream (KEYS indexes), high watermark, low
-- watermark}): none while a staging queue of that model and lane waits (they keep their turn);
-- the interactive lane up to its own backlog; the batch lane unless paused (hysteresis on both
-- lanes' backlog), pausing it once it reaches the high watermark. Each stream's backlog is read
-- once per call; `took(stream, n)` counts what the caller then sent to it.
local function lane_room(worker_group)
  local backlogs = {}
  local function backlog_of(stream)
    if not backlogs[stream] then backlogs[stream] = lane_backlog(stream, worker_group) end
    return backlogs[stream]
  end
  local function room(direct, ring, flow, lane, n)
    if redis.call('LLEN', ring) > 0 then return 0 end
    local high, low = direct[3], direct[4]
    local bi = backlog_of(KEYS[direct[1]])
    if lane == LANE.INTERACTIVE then return math.max(0, math.min(n, high - bi)) end
    local total = bi + backlog_of(KEYS[direct[2]])
    local paused = redis.call('HGET', flow, F.PAUSED) == '1'
    if paused and total < low then
      paused = false
      redis.call('HSET', flow, F.PAUSED, '0')
    end
    if paused then return 0 end
    local sent = math.max(0, math.min(n, high - total))
    if total + sent >= high then redis.call('HSET', flow, F.PAUSED, '1') end
    return sent
  end
  local function took(stream, n)
    if n > 0 then backlogs[stream] = backlog_of(stream) + n end
  end
  return room, took
end
