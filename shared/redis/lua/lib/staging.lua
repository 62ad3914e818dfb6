-- The staging queues: a job's requests for one (model, lane), admitted but not yet routed.
--
-- Invariant: a queue is in its ring (`ring:<model>:<lane>`) exactly while it is non-empty, and
-- the field `staged:<lane>` of the model's flow hash equals the total length of the lane's queues.
-- Every script that touches a staging queue does it through these functions, which keep it.

-- Append `items` (a non-empty list) to a queue.
local function stage(queue, ring, flow, lane, items)
  local len = redis.call('RPUSH', queue, unpack(items))
  if len == #items then redis.call('RPUSH', ring, queue) end
  redis.call('HINCRBY', flow, STAGED[lane], #items)
end

-- Empty a queue and return what it held.
local function unstage_all(queue, ring, flow, lane)
  local items = redis.call('LRANGE', queue, 0, -1)
  if #items > 0 then
    redis.call('LREM', ring, 0, queue)
    redis.call('DEL', queue)
    redis.call('HINCRBY', flow, STAGED[lane], -#items)
  end
  return items
end

-- Round-robin over the ring's queues, up to `quantum` requests per turn and `budget` stream
-- entries in all, `per` requests to an entry: `emit(items)` with each turn's requests (all of one
-- job), which adds them as ceil(#items / per) entries. Returns how many requests were taken.
local function take_turns(ring, flow, lane, budget, quantum, per, emit)
  local moved = 0
  local live = redis.call('LLEN', ring)
  while budget > 0 and live > 0 do
    local q = redis.call('LPOP', ring)
    local items = redis.call('LPOP', q, math.min(quantum, budget * per))
    if items then
      emit(items)
      moved = moved + #items
      budget = budget - math.ceil(#items / per)
    end
    if redis.call('EXISTS', q) == 1 then
      redis.call('RPUSH', ring, q)
    else
      live = live - 1
    end
  end
  if moved > 0 then redis.call('HINCRBY', flow, STAGED[lane], -moved) end
  return moved
end

-- Take the first `n` requests of a queue (n at most its length).
local function unstage_head(queue, ring, flow, lane, n)
  if n <= 0 then return end
  redis.call('LTRIM', queue, n, -1)
  if redis.call('EXISTS', queue) == 0 then redis.call('LREM', ring, 0, queue) end
  redis.call('HINCRBY', flow, STAGED[lane], -n)
end
