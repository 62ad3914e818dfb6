-- Requests that move along their model's fallback chain. A moved request is the msgpack array
-- [reason, request as accepted] (shared/wire/messages.py MovedRequest); the request keeps the model
-- it named, and the worker that serves it reports its own model as `served_by`.

-- the position just after the msgpack string that starts at `pos`
local function skip_string(s, pos)
  local b = string.byte(s, pos)
  if b >= 0xa0 and b <= 0xbf then return pos + 1 + (b - 0xa0) end
  if b == 0xd9 then return pos + 2 + string.byte(s, pos + 1) end
  if b == 0xda then return pos + 3 + string.byte(s, pos + 1) * 256 + string.byte(s, pos + 2) end
  return error('moves: a moved request must start with its reason')
end

-- the request as it was accepted, whether it moved before or not
local function as_accepted(item)
  if string.byte(item, 1) == 0x92 then return string.sub(item, skip_string(item, 2)) end
  return item
end

local function moved(item, reason)
  return '\146' .. cmsgpack.pack(reason) .. as_accepted(item)
end

-- true when the request's expected wait exceeds its max_queue_wait_ms: the time it has waited
-- plus `ahead` requests before it at `ms_each` each
local function overdue(item, now, ahead, ms_each)
  local req = cmsgpack.unpack(as_accepted(item))
  local limit = req['max_queue_wait_ms']
  if not limit then return false end
  return now - req['accepted_ms'] + ahead * ms_each > limit
end
