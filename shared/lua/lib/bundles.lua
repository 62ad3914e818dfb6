-- Results-stream batches: a msgpack array built from elements that are already encoded.

-- the msgpack array of `items` (a list of encoded msgpack values), without decoding them
local function msgpack_array(items)
  local n = #items
  local head
  if n < 16 then
    head = string.char(0x90 + n)
  elseif n < 65536 then
    head = string.char(0xdc, math.floor(n / 256), n % 256)
  else
    head = string.char(0xdd, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  end
  return head .. table.concat(items)
end
