-- A model's lane streams under flow control: how much each may still take. Watermarks and
-- backlogs count entries; a batch-lane entry may carry up to `per` requests of one job.

-- Append `items[first..last]` to `stream`, `per` to an entry (fields `field`, `field`1, ...).
-- Returns how many entries were added.
local function append_requests(stream, field, items, first, last, per)
  local entries = 0
  local i = first
  while i <= last do
    local upto = math.min(last, i + per - 1)
    local args = {'XADD', stream, '*', field, items[i]}
    for j = i + 1, upto do
      args[#args + 1] = field .. (j - i)
      args[#args + 1] = items[j]
    end
    redis.call(unpack(args))
    entries = entries + 1
    i = upto + 1
  end
  return entries
end

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
      -- to a fallback model: services/dispatcher/lua/move_waiting.lua), so the smaller figure is the backlog
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
-- watermark, requests per batch-lane entry}): none while a staging queue of that model and lane
-- waits (they keep their turn); the interactive lane up to its own backlog; the batch lane unless
-- paused (hysteresis on both lanes' backlog), pausing it once it reaches the high watermark. Each
-- stream's backlog is read once per call; `send(direct, lane, payloads, n, field)` appends the
-- first n payloads to their stream and counts the entries.
local function lane_room(worker_group)
  local backlogs = {}
  local function backlog_of(stream)
    if not backlogs[stream] then backlogs[stream] = lane_backlog(stream, worker_group) end
    return backlogs[stream]
  end
  local function per_entry(direct, lane)
    if lane == LANE.BATCH then return direct[5] or 1 end
    return 1
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
    local per = per_entry(direct, lane)
    local sent = math.max(0, math.min(math.ceil(n / per), high - total))
    if total + sent >= high then redis.call('HSET', flow, F.PAUSED, '1') end
    return math.min(n, sent * per)
  end
  local function send(direct, lane, payloads, n, field)
    local stream = KEYS[lane == LANE.INTERACTIVE and direct[1] or direct[2]]
    local entries = append_requests(stream, field, payloads, 1, n, per_entry(direct, lane))
    if entries > 0 then backlogs[stream] = backlog_of(stream) + entries end
  end
  return room, send
end
