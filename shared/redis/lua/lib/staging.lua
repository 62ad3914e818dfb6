-- The staging queues: a job's requests for one (model, lane), admitted but not yet routed.
--
-- Invariant: a queue is in its ring (`ring:<model>:<lane>`) exactly while it is non-empty, and
-- the field `staged:<lane>` of the model's flow hash equals the total length of the lane's queues.
-- A queue whose job has a deadline is also in the lane's `urgent:<model>:<lane>` set, which may
-- keep members whose queue emptied (the feed drops them as it meets them).
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

-- Serve the lane's queues, up to `quantum` requests per turn and `budget` stream entries in all,
-- `per` requests to an entry: `emit(items)` with each turn's requests (all of one job), which adds
-- them as ceil(#items / per) entries. Of every DEADLINE_TURNS + 1 turns, DEADLINE_TURNS go to the
-- queue of `urgent` (queue -> deadline ms) with the earliest deadline, and the other goes
-- round-robin over the ring's queues without a deadline (all of them, when none is without one),
-- so work without a deadline keeps a fourth and is never starved. The turn count lives in the flow hash (`turn_field`),
-- so the share holds across calls of any size. `urgent` members whose queue is gone are dropped as
-- they are met, and the whole set once the ring is empty. Returns how many requests were taken.
local DEADLINE_TURNS = 3

-- The ring's next queue without a deadline (the ones passed over keep their place at the back),
-- or, when every queue in it has one, its next queue.
local function plain_turn(ring, urgent, live)
  for _ = 1, live do
    local q = redis.call('LPOP', ring)
    if not redis.call('ZSCORE', urgent, q) then return q end
    redis.call('RPUSH', ring, q)
  end
  return redis.call('LPOP', ring)  -- every queue has one: after a full turn, the first again
end

local function take_turns(ring, urgent, flow, lane, budget, quantum, per, emit)
  local moved = 0
  local live = redis.call('LLEN', ring)
  local turn = tonumber(redis.call('HGET', flow, TURN[lane]) or '0')
  local turns = 0
  while budget > 0 and live > 0 do
    local q = nil
    if turn % (DEADLINE_TURNS + 1) ~= DEADLINE_TURNS then
      local head = redis.call('ZRANGE', urgent, 0, 0)[1]
      while head and redis.call('EXISTS', head) == 0 do
        redis.call('ZREM', urgent, head)
        head = redis.call('ZRANGE', urgent, 0, 0)[1]
      end
      q = head
    end
    local from_ring = q == nil
    if from_ring then q = plain_turn(ring, urgent, live) end
    local items = redis.call('LPOP', q, math.min(quantum, budget * per))
    if items then
      emit(items)
      moved = moved + #items
      budget = budget - math.ceil(#items / per)
    end
    local left = redis.call('EXISTS', q) == 1
    if from_ring and left then
      redis.call('RPUSH', ring, q)
    elseif not left then
      if not from_ring then redis.call('LREM', ring, 0, q) end
      redis.call('ZREM', urgent, q)
      live = live - 1
    end
    turn = turn + 1
    turns = turns + 1
  end
  if moved > 0 then redis.call('HINCRBY', flow, STAGED[lane], -moved) end
  if turns > 0 then redis.call('HSET', flow, TURN[lane], turn % 1000000) end
  if live == 0 then redis.call('DEL', urgent) end
  return moved
end

-- Mark a queue as one whose job must be done by `deadline_ms` (0: it has none).
local function mark_urgent(urgent, queue, deadline_ms)
  if deadline_ms and deadline_ms > 0 then redis.call('ZADD', urgent, deadline_ms, queue) end
end

-- Take the first `n` requests of a queue (n at most its length).
local function unstage_head(queue, ring, flow, lane, n)
  if n <= 0 then return end
  redis.call('LTRIM', queue, n, -1)
  if redis.call('EXISTS', queue) == 0 then redis.call('LREM', ring, 0, queue) end
  redis.call('HINCRBY', flow, STAGED[lane], -n)
end
