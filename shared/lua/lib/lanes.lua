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
