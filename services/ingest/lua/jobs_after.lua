-- Read a tenant's jobs index, newest first, after a listing cursor.
-- KEYS: the tenant's jobs index (score = created ms).
-- ARGV: cursor score ('' = from the newest), cursor job id, most entries to return.
-- Guarantees: one atomic read, so an index that changes between two pages neither repeats nor
-- skips an entry: the order is (score, id) descending, and the page starts right after the
-- cursor's position, also when the cursor's own job has left the index meanwhile.
-- Returns a flat list: job id, score, job id, score, ...
local index, score, member, count = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
if score == '' then
  return redis.call('ZRANGE', index, 0, count - 1, 'REV', 'WITHSCORES')
end
local rank = redis.call('ZREVRANK', index, member)
if rank then
  return redis.call('ZRANGE', index, rank + 1, rank + count, 'REV', 'WITHSCORES')
end
-- The cursor's job is gone: entries of the cursor's score come first (ids descending); skip
-- those at or above its id, then return what follows.
local skip, s = 0, tonumber(score)
while true do
  local rows = redis.call('ZRANGE', index, score, '-inf', 'BYSCORE', 'REV', 'LIMIT', skip, 100, 'WITHSCORES')
  local stopped = false
  for i = 1, #rows, 2 do
    if tonumber(rows[i + 1]) < s or rows[i] < member then
      stopped = true
      break
    end
    skip = skip + 1
  end
  if stopped or #rows < 200 then break end
end
return redis.call('ZRANGE', index, score, '-inf', 'BYSCORE', 'REV', 'LIMIT', skip, count, 'WITHSCORES')
