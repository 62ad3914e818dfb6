-- HMGET / HSET over many fields, in slices (Lua's unpack has a stack limit).
local function hmget_all(key, fields)
  local out = {}
  for i = 1, #fields, 1000 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 999, #fields)))
    for k = 1, #part do out[i + k - 1] = part[k] end
  end
  return out
end
local function hset_all(key, pairs_list)
  for i = 1, #pairs_list, 1000 do
    redis.call('HSET', key, unpack(pairs_list, i, math.min(i + 999, #pairs_list)))
  end
end
