-- Store an uploaded file if it fits its tenant's quota, accounting for it in the same step.
-- KEYS: file hash, tenant's file index, tenant's file usage hash (file id -> '<expires s> <bytes>').
-- ARGV: file id, meta field, meta JSON, content field, content, ttl (s), created (s), byte quota,
--   file-count quota.
-- Guarantees: files past their expiry leave the usage and the index first (a TTL'd key vanishes
-- without a hook; the usage entry expires at the same second as the file, by Redis's clock); then
-- the file, its index entry and its usage entry are written together, or nothing is.
-- Returns {'ok' | 'bytes' | 'files' (the quota it would pass), bytes used, files stored} (before this one).
local file, index, usage = KEYS[1], KEYS[2], KEYS[3]
local id, meta_field, meta, content_field, content = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ttl, created, max_bytes, max_files = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local now = tonumber(redis.call('TIME')[1])
local entries = redis.call('HGETALL', usage)
local used, files, gone = 0, 0, {}
for i = 1, #entries, 2 do
  local expires, size = string.match(entries[i + 1], '^(%d+) (%d+)$')
  if expires == nil or tonumber(expires) <= now then
    gone[#gone + 1] = entries[i]
  else
    used = used + tonumber(size)
    files = files + 1
  end
end
for i = 1, #gone, 500 do
  local part = {unpack(gone, i, math.min(i + 499, #gone))}
  redis.call('HDEL', usage, unpack(part))
  redis.call('ZREM', index, unpack(part))
end
if files + 1 > max_files then return {'files', used, files} end
if used + #content > max_bytes then return {'bytes', used, files} end
local expires = now + ttl
redis.call('HSET', file, meta_field, meta, content_field, content)
redis.call('EXPIREAT', file, expires)
redis.call('ZADD', index, created, id)
redis.call('HSET', usage, id, expires .. ' ' .. #content)
-- the index and the usage go with the file that expires last
for _, key in ipairs({index, usage}) do
  if redis.call('TTL', key) == -1 then redis.call('EXPIREAT', key, expires) else redis.call('EXPIREAT', key, expires, 'GT') end
end
return {'ok', used, files}
