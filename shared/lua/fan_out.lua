-- uses: keys
-- Create webhook deliveries and acknowledge the events they came from.
-- KEYS: events stream, due set, then (delivery, endpoint's delivery index) per delivery.
-- ARGV: group, now_ms, msgpack {event ids to acknowledge, per delivery: (id, record JSON)}.
-- Guarantees: a delivery that already exists (its event was fanned out before) is left alone.
-- Returns how many deliveries were created.
local events, due = KEYS[1], KEYS[2]
local group, now = ARGV[1], ARGV[2]
local batch = cmsgpack.unpack(ARGV[3])
local acks, deliveries = batch[1], batch[2]
local targets = key_groups(3, 2)
for i = 1, #acks, 500 do
  redis.call('XACK', events, group, unpack(acks, i, math.min(i + 499, #acks)))
end
local created = 0
for d = 1, #deliveries do
  local id, record = deliveries[d][1], deliveries[d][2]
  local delivery, index = targets[d][1], targets[d][2]
  if redis.call('SET', delivery, record, 'NX') then
    redis.call('ZADD', index, now, id)
    redis.call('ZADD', due, now, id)
    created = created + 1
  end
end
return created
