-- uses: staging bundles
-- A worker publishes what became of a batch of model-stream entries.
-- KEYS: the model's lane streams..., results stream, dead-letter stream, fallback moves counter,
--       then the staging keys the moves name.
-- ARGV: group, bundle field, drop field, reason field, meta field, payload field, msgpack
--       outcomes, the number of lane streams, the results: a msgpack array of the encoded
--       ResultRecords of the entries that have one, in outcome order. The outcomes are a list of
--   (lane stream index, entry id, its result's byte length in the results (0: none), dropped request
--    ('' none), drop reason, dead-letter payload ('' none), dead-letter meta, moved request
--    ('' none), and for a move: the next model's staging queue, ring and flow (KEYS indexes), the
--    lane, the counter field)
--   per entry; a row may stop after its result (the rest is then none).
-- Guarantees: an entry's result, drop notice, dead letter or move to the next model of its
-- fallback chain happens exactly when its XACK succeeds; nothing happens for an entry no longer
-- pending here (another worker reclaimed it). An entry that carries several requests has one row
-- per request, all in this call: one XACK decides for them all. The results of the acknowledged entries go to the
-- results stream as one entry (a msgpack array of their records, field `bundle`), so the collector
-- reads one entry per batch; when every entry was still pending, that entry is the results
-- argument as given. Returns how many rows (requests) were published.
local group, bf, xf, rf, mf, pf = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local outcomes = cmsgpack.unpack(ARGV[7])
local lanes, batch = tonumber(ARGV[8]), ARGV[9]
local results, dead, moves = KEYS[lanes + 1], KEYS[lanes + 2], KEYS[lanes + 3]
local published = 0
local lengths, keep = {}, {}
local acks = {}  -- lane index -> entry id -> whether this call's XACK acknowledged it
for i = 1, #outcomes do
  local o = outcomes[i]
  local of_lane = acks[o[1]]
  if not of_lane then
    of_lane = {}
    acks[o[1]] = of_lane
  end
  local acked = of_lane[o[2]]
  if acked == nil then
    acked = redis.call('XACK', KEYS[o[1]], group, o[2]) == 1
    of_lane[o[2]] = acked
  end
  if o[3] > 0 then
    lengths[#lengths + 1] = o[3]
    keep[#lengths] = acked
  end
  if acked then
    if #o > 3 and o[4] ~= '' then redis.call('XADD', results, '*', xf, o[4], rf, o[5]) end
    if #o > 3 and o[6] ~= '' then redis.call('XADD', dead, '*', pf, o[6], mf, o[7]) end
    if #o > 3 and o[8] ~= '' then
      stage(KEYS[o[9]], KEYS[o[10]], KEYS[o[11]], o[12], {o[8]})
      redis.call('HINCRBY', moves, o[13], 1)
    end
    published = published + 1
  end
end
local acked_results = msgpack_subarray(batch, lengths, keep)
if acked_results then redis.call('XADD', results, '*', bf, acked_results) end
return published
