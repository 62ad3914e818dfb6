-- Remove a dead consumer from its group, so groups do not grow with the names of past processes.
-- KEYS: the stream, the consumer's heartbeat key. ARGV: group, consumer.
-- Guarantees: only a consumer without a heartbeat that holds nothing is removed (both checked in
-- this step: XGROUP DELCONSUMER would strand whatever it still held). A consumer removed while it
-- is in fact paused is recreated by its next read. Returns 1 if removed.
local stream, heartbeat = KEYS[1], KEYS[2]
local group, consumer = ARGV[1], ARGV[2]
if redis.call('EXISTS', heartbeat) == 1 then return 0 end
if #redis.call('XPENDING', stream, group, '-', '+', 1, consumer) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
return 1
