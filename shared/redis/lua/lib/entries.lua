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

-- the requests lane-stream entry `id` of `stream` carries (fields `field`, `field`1, `field`2...,
-- shared/redis/keys.py), in order: an empty list when there is no such entry or it has none
local function entry_payloads(stream, id, field)
  local entry = redis.call('XRANGE', stream, id, id)[1]
  local out = {}
  if not entry then return out end
  local fields = entry[2]
  for k = 1, #fields, 2 do
    local name = fields[k]
    if name == field or (string.sub(name, 1, #field) == field and string.match(string.sub(name, #field + 1), '^%d+$')) then
      out[#out + 1] = fields[k + 1]
    end
  end
  return out
end
