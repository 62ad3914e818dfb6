-- uses: keys
-- Create webhook deliveries and acknowledge the events they came from.
-- KEYS: events stream, due set, then (delivery, endpoint's delivery index) per delivery.
-- ARGV: group, now_ms, msgpack {event ids to acknowledge, per delivery: (id, record JSON)},
--   delivery TTL (s), most entries an endpoint's delivery index keeps.
-- Guarantees: a delivery that already exists (its event was fanned out before) is left alone. A new
-- delivery expires TTL after it was due unless an attempt saves it again; its endpoint's index
-- drops entries older than the TTL and the oldest beyond the bound, and expires two TTLs after its
-- newest entry (records it points at are gone by then unless retried for longer than a TTL).
-- Returns how many deliveries were created.
local events, due = KEYS[1], KEYS[2]
local group, now = ARGV[1], tonumber(ARGV[2])
local batch = cmsgpack.unpack(ARGV[3])
local ttl_s, keep = tonumber(ARGV[4]), tonumber(ARGV[5])
local acks, deliveries = batch[1], batch[2]
local targets = key_groups(3, 2)
for i = 1, #acks, 500 do
  redis.call('XACK', events, group, unpack(acks, i, math.min(i + 499, #acks)))
end
local created = 0
local touched = {}
for d = 1, #deliveries do
  local id, record = deliveries[d][1], deliveries[d][2]
  local delivery, index = targets[d][1], targets[d][2]
  if redis.call('SET', delivery, record, 'NX', 'EX', ttl_s) then
    redis.call('ZADD', index, now, id)
    redis.call('ZADD', due, now, id)
    created = created + 1
    touched[index] = true
  end
end
for index in pairs(touched) do
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. string.format('%d', now - ttl_s * 1000))
  redis.call('ZREMRANGEBYRANK', index, 0, -(keep + 1))
  redis.call('EXPIRE', index, 2 * ttl_s)
end
return created
