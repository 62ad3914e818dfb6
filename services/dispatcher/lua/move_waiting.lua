-- uses: staging moves entries
-- Move requests waiting for one model (staged, or routed to its streams and not read by any
-- worker) to the next model of a fallback chain, or end them when no model of the chain may take
-- them (a drop notice, counted by the collector like a worker's drop).
-- KEYS: the model's lane streams (interactive, batch), results stream, moves counter hash, then
--       the keys the ops name by index.
-- ARGV: worker group, payload field, drop field, reason field, reason, now ms, msgpack ops, the
--       model's name, the next model's name ('' when ending them); ops are each
--   {'s', lane (1/2), entry id, job, to queue, to ring, to flow}: one stream entry, if still unread
--        (every request it carries: they are of one job);
--   {'q', job, queue, ring, flow, lane, to queue, to ring, to flow, most, ahead, ms each}: the head
--        of a staging queue: up to `most` requests, only those overdue (lib/moves.lua) when
--        `ms each` >= 0, stopping at the first that is not;
--   with to queue = 0 to end the requests (`reason` is then a drop reason), keys as KEYS indexes.
-- Guarantees: a stream entry moves only if the worker group has not read it (checked against its
-- last-delivered id) and this XDEL removes it; staged requests leave their queue and reach the
-- next in the same step, so a request is never in two places, never lost. A request of a job
-- that is being stopped becomes the stop's drop notice instead; one of a finished job is removed.
-- Counts moves per `<model> <next model> <reason>` and ends per `<model> - <reason>` in the
-- counter hash, and per job the requests moved off the model (its `m:<model>:moved`, which
-- the planner reads). Returns {moved, ended}.
local results, counter = KEYS[3], KEYS[4]
local group, pf, xf, rf, reason, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local ops = cmsgpack.unpack(ARGV[7])
local from, to = ARGV[8], ARGV[9]
local moved_n, ended_n = 0, 0

local last = {}
local function last_of(l)
  if last[l] == nil then last[l] = last_delivered(KEYS[l], group) or false end
  return last[l] or nil
end

-- place `items` (requests leaving the model) according to their job's state
local function place(items, job, lane, to_queue, to_ring, to_flow)
  if #items == 0 then return end
  local st = redis.call('HGET', KEYS[job], F.STATUS)
  if STOPPING[st] then
    for _, item in ipairs(items) do redis.call('XADD', results, '*', xf, item, rf, STOPPING[st][2]) end
  elseif not RUNNING[st] then
    return  -- the job has ended (or expired from Redis): nothing left to count
  elseif to_queue == 0 then
    for _, item in ipairs(items) do redis.call('XADD', results, '*', xf, item, rf, reason) end
    ended_n = ended_n + #items
  else
    local out = {}
    for i, item in ipairs(items) do out[i] = moved(item, reason) end
    stage(KEYS[to_queue], KEYS[to_ring], KEYS[to_flow], lane, out)
    redis.call('HINCRBY', KEYS[job], model_field(from, MOVED), #items)
    moved_n = moved_n + #items
  end
end

for _, op in ipairs(ops) do
  if op[1] == 's' then
    local l, id = op[2], op[3]
    if after(id, last_of(l)) then
      local payloads = entry_payloads(KEYS[l], id, pf)
      if #payloads > 0 and redis.call('XDEL', KEYS[l], id) == 1 then
        place(payloads, op[4], l == 1 and LANE.INTERACTIVE or LANE.BATCH, op[5], op[6], op[7])
      end
    end
  else
    local job, queue, ring, flow, lane = op[2], KEYS[op[3]], KEYS[op[4]], KEYS[op[5]], op[6]
    local most, ahead, ms_each = op[10], op[11], op[12]
    local items = redis.call('LRANGE', queue, 0, most - 1)
    local n = #items
    if ms_each >= 0 then
      n = 0
      for i, item in ipairs(items) do
        if not overdue(item, now, ahead + i - 1, ms_each) then break end
        n = i
      end
    end
    if n > 0 then
      local taken = {}
      for i = 1, n do taken[i] = items[i] end
      unstage_head(queue, ring, flow, lane, n)
      place(taken, job, lane, op[7], op[8], op[9])
    end
  end
end
if moved_n > 0 then redis.call('HINCRBY', counter, from .. ' ' .. to .. ' ' .. reason, moved_n) end
if ended_n > 0 then redis.call('HINCRBY', counter, from .. ' - ' .. reason, ended_n) end
return {moved_n, ended_n}
