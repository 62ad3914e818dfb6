-- uses: entries
-- Drop the requests a stopping job still has in a model's lane streams when no live worker will
-- read them: each becomes the drop notice a worker would publish (shared/lanes/lua/publish.lua), which
-- the collector counts as cancelled / expired like any other.
-- KEYS: job, results stream, then the model's lane streams.
-- ARGV: worker group, payload field, drop field, reason field, then msgpack: per lane stream, the
--       ids of the job's entries in it.
-- Guarantees: nothing happens unless the job is being stopped (checked here). An entry read by a
-- consumer is dropped only if this XACK acknowledges it, an unread one only if this XDEL removes
-- it, so an entry a worker has published (or drops, or reads) meanwhile is never counted twice.
-- An entry may carry several requests, all of the job (flow.batch_bundle). Returns how many
-- requests were dropped.
local job, results = KEYS[1], KEYS[2]
local group, pf, xf, rf = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local per_lane = cmsgpack.unpack(ARGV[5])
local st = redis.call('HGET', job, F.STATUS)
if not STOPPING[st] then return 0 end
local reason = STOPPING[st][2]

local dropped = 0
for l, ids in ipairs(per_lane) do
  local stream = KEYS[2 + l]
  local last = last_delivered(stream, group)
  for _, id in ipairs(ids) do
    local payloads = entry_payloads(stream, id, pf)
    if #payloads > 0 then  -- an entry without one is left to the worker, which dead-letters it
      local gone
      if after(id, last) then
        gone = redis.call('XDEL', stream, id) == 1
      else
        gone = last ~= nil and redis.call('XACK', stream, group, id) == 1
      end
      if gone then
        for _, payload in ipairs(payloads) do redis.call('XADD', results, '*', xf, payload, rf, reason) end
        dropped = dropped + #payloads
      end
    end
  end
end
return dropped
