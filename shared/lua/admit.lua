-- uses: staging
-- The router's admit: acknowledge ingest entries and stage their requests.
-- KEYS: ingest stream, results stream, then whatever the ops name (queues, rings, flows, jobs,
--       the dead-letter stream), each once.
-- ARGV[1] group, ARGV[2] drop field, ARGV[3] reason field, ARGV[4] msgpack: per ingest entry,
--   (entry id, ops), each op one of
--     {'q', queue, ring, flow, job, lane, payloads}: stage the requests if their job still runs,
--        turn them into drop notices if it is being stopped, skip them if it is finished or gone;
--     {'f', stream, fields}: append one entry (a flat field, value list) to a stream;
--   with keys given as their index in KEYS.
-- Guarantees: nothing happens for an entry whose XACK finds it no longer pending here, so a chunk
-- delivered twice is admitted once. Returns the number of requests staged.
local ingest, results_stream = KEYS[1], KEYS[2]
local group, drop, reason = ARGV[1], ARGV[2], ARGV[3]
local entries = cmsgpack.unpack(ARGV[4])
local admitted = 0
for _, entry in ipairs(entries) do
  if redis.call('XACK', ingest, group, entry[1]) == 1 then
    for _, op in ipairs(entry[2]) do
      if op[1] == 'q' then
        local queue, ring, flow, job, lane, payloads = KEYS[op[2]], KEYS[op[3]], KEYS[op[4]], KEYS[op[5]], op[6], op[7]
        local st = redis.call('HGET', job, F.STATUS)
        if RUNNING[st] then
          stage(queue, ring, flow, lane, payloads)
          admitted = admitted + #payloads
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
return admitted
