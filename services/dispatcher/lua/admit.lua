-- uses: staging lanes
-- The router's admit: acknowledge ingest entries and stage their requests, or send them straight
-- to their lane stream when flow control would move them at once anyway.
-- KEYS: ingest stream, results stream, then whatever the ops name (queues, rings, flows, jobs,
--       lane streams, the dead-letter stream), each once.
-- ARGV[1] group, ARGV[2] drop field, ARGV[3] reason field, ARGV[4] msgpack: per ingest entry,
--   (entry id, ops), each op one of
--     {'q', queue, ring, flow, job, lane, payloads, direct, urgent, deadline ms}: stage the requests if their job still
--        runs, turn them into drop notices if it is being stopped, skip them if it is finished or
--        gone; with `direct` = {interactive stream, batch stream, high watermark, low watermark, requests
--        per batch-lane entry},
--        first send what the lane may take now straight to its stream; a job with a deadline
--        (deadline ms > 0) has its queue marked in the lane's urgent set (lib/staging.lua);
--     {'f', stream, fields}: append one entry (a flat field, value list) to a stream;
--   with keys given as their index in KEYS. ARGV[5] worker group, ARGV[6] payload field.
-- Guarantees: nothing happens for an entry whose XACK finds it no longer pending here, so a chunk
-- delivered twice is admitted once. A request is sent straight to its lane stream only while no
-- staging queue of that model and lane waits (they keep their turn) and within the watermarks
-- of feed.lua (the interactive lane's own backlog; the batch lane's pause, with its hysteresis,
-- on both lanes' backlog); what does not fit is staged behind it. Returns {requests admitted,
-- requests staged}.
local ingest, results_stream = KEYS[1], KEYS[2]
local group, drop, reason = ARGV[1], ARGV[2], ARGV[3]
local entries = cmsgpack.unpack(ARGV[4])
local worker_group, field = ARGV[5], ARGV[6]
local admitted, staged = 0, 0

local room, send = lane_room(worker_group)

local function admit(queue, ring, flow, lane, payloads, direct, urgent, deadline_ms)
  local sent = 0
  if direct then
    sent = room(direct, ring, flow, lane, #payloads)
    send(direct, lane, payloads, sent, field)
  end
  if sent < #payloads then
    local rest = payloads
    if sent > 0 then rest = {unpack(payloads, sent + 1)} end
    stage(queue, ring, flow, lane, rest)
    if urgent then mark_urgent(urgent, queue, deadline_ms) end
    staged = staged + #rest
  end
  admitted = admitted + #payloads
end

for _, entry in ipairs(entries) do
  if redis.call('XACK', ingest, group, entry[1]) == 1 then
    for _, op in ipairs(entry[2]) do
      if op[1] == 'q' then
        local queue, ring, flow, job, lane, payloads = KEYS[op[2]], KEYS[op[3]], KEYS[op[4]], KEYS[op[5]], op[6], op[7]
        local st = redis.call('HGET', job, F.STATUS)
        if RUNNING[st] then
          local urgent = nil
          if op[9] and op[9] > 0 then urgent = KEYS[op[9]] end
          admit(queue, ring, flow, lane, payloads, op[8] or nil, urgent, op[10])
        elseif STOPPING[st] then
          for _, payload in ipairs(payloads) do
            redis.call('XADD', results_stream, '*', drop, payload, reason, STOPPING[st][2])
          end
        end
      else
        redis.call('XADD', KEYS[op[2]], '*', unpack(op[3]))
      end
    end
  end
end
return {admitted, staged}
