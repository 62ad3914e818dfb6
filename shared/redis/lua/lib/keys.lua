-- `count` groups of `width` KEYS from KEYS[first] on (all the rest when `count` is nil): a list
-- of lists. The Python wrapper appends one group per job, model or lane.
local function key_groups(first, width, count)
  local groups = {}
  local last = count and first + count * width - 1 or #KEYS
  for k = first, last, width do
    local g = {}
    for w = 1, width do g[w] = KEYS[k + w - 1] end
    groups[#groups + 1] = g
  end
  return groups
end
