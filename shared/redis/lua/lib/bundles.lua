-- Results-stream batches: msgpack arrays of elements that are already encoded. Strings built in
-- this Lua cost ~1-4 ns per byte (table.concat copies byte by byte), so the common case takes the
-- batch the caller already built, whole.

-- the msgpack header of an array of n elements
local function msgpack_array_head(n)
  if n < 16 then
    return string.char(0x90 + n)
  elseif n < 65536 then
    return string.char(0xdc, math.floor(n / 256), n % 256)
  end
  return string.char(0xdd, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end

-- The msgpack array of those elements of `batch` (an encoded array of `#lengths` elements of
-- these byte lengths) that `keep[i]` names: `batch` itself, uncopied, when all are kept; nil
-- when none is.
local function msgpack_subarray(batch, lengths, keep)
  local kept = 0
  for i = 1, #lengths do if keep[i] then kept = kept + 1 end end
  if kept == 0 then return nil end
  if kept == #lengths then return batch end
  local parts = {}
  local at = #msgpack_array_head(#lengths) + 1
  for i = 1, #lengths do
    if keep[i] then parts[#parts + 1] = string.sub(batch, at, at + lengths[i] - 1) end
    at = at + lengths[i]
  end
  return msgpack_array_head(kept) .. table.concat(parts)
end
