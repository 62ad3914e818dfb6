-- Move an entry to the dead-letter stream, only if this consumer still held it.
-- KEYS: source stream, dead-letter stream.
-- ARGV: group, entry id, payload field, payload, meta field, meta.
-- Guarantees: the dead letter is appended exactly when the XACK succeeds. Returns 1 if it was.
local source, dead = KEYS[1], KEYS[2]
local group, entry_id, payload_field, payload, meta_field, meta = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('XACK', source, group, entry_id) == 1 then
  redis.call('XADD', dead, '*', payload_field, payload, meta_field, meta)
  return 1
end
return 0
