-- Record a webhook attempt's outcome: only the attempt's holder may. The holder read the delivery
-- after taking the attempt and appended its attempts to that history, so storing its record loses
-- no other attempt's; a sender whose lease ended (another holder took over) records nothing.
-- KEYS: the delivery's attempt hash, due set, the endpoint's in-flight set, the delivery,
--       dead-letter stream.
-- ARGV: delivery id, token, record JSON ('' to leave the record as it is), next attempt ms ('' when it ended), ttl s, dead-letter
--       payload and meta ('' when not dead-lettered), payload field, meta field.
-- Returns 1 when recorded, 0 when the caller no longer holds the attempt (nothing changed).
local attempt, due, sending, delivery, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, token, record, next_ms, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local dl_payload, dl_meta, payload_field, meta_field = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
if redis.call('HGET', attempt, A.TOKEN) ~= token then return 0 end
redis.call('DEL', attempt)
redis.call('ZREM', sending, id)
if record ~= '' then redis.call('SET', delivery, record, 'EX', ttl) end
if next_ms ~= '' then
  redis.call('ZADD', due, next_ms, id)
else
  redis.call('ZREM', due, id)
end
if dl_meta ~= '' then
  redis.call('XADD', dead, '*', payload_field, dl_payload, meta_field, dl_meta)
end
return 1
