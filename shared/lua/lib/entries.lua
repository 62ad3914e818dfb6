-- Stream entries a consumer group may or may not have read yet.

local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

-- the id of the last entry `group` has read from `stream`, or nil when the group (or the stream)
-- is missing
local function last_delivered(stream, group)
  if redis.call('EXISTS', stream) == 0 then return nil end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local t = {}
    for k = 1, #g, 2 do t[g[k]] = g[k + 1] end
    if t['name'] == group then return t['last-delivered-id'] end
  end
  return nil
end

-- whether entry `id` comes after `last` (an id, or nil: nothing read)
local function after(id, last)
  if not last then return true end
  local ms, seq = parse_id(id)
  local last_ms, last_seq = parse_id(last)
  return ms > last_ms or (ms == last_ms and seq > last_seq)
end

-- the value of `field` in entry `id` of `stream`, or nil (no such entry, or no such field)
local function entry_field(stream, id, field)
  local entry = redis.call('XRANGE', stream, id, id)[1]
  if not entry then return nil end
  for k = 1, #entry[2], 2 do
    if entry[2][k] == field then return entry[2][k + 1] end
  end
  return nil
end
