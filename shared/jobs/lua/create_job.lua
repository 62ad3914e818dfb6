-- uses: hash keys lanes
-- Create a job: idempotency, admission, then the whole job, or nothing.
-- KEYS: job, jobs index, ingest stream, backlog total, deadlines, idempotency key (the job key
--       again when there is none), tenant backlog hash, the record of the job the idempotency key
--       was seen with (`replayed`; the job key again when none), the tenant's jobs index, the
--       job -> tenant hash, then the flow hash of each model, then the lane streams, rings and flows
--       the chunks name.
-- ARGV[1] msgpack map: job_id, created_ms, total, global_limit, payload_field, expires_ms,
--       idempotency ('' = none), replayed (the idempotency key's value the caller saw, '' = none),
--       tenant, tenant_limit, models (list of (model, count, limit), in flow-key order), record
--       (flat list of field, value), chunks (list of ingest entries, each either an encoded
--       IngestChunk, or {encoded IngestChunk of one model and lane, direct, ring, flow, lane,
--       payloads} that may go straight to the lane stream: `direct` as lane_room takes it, ring and
--       flow as KEYS indexes, after the flows), worker_group, payload field, skip field.
-- Guarantees: for a seen idempotency key returns {'conflict', job id} (another body),
-- {'recheck', value} (the same body, but the key's value is not `replayed`: call again with that
-- value and its job's key), {'replay', job id}, or {'gone', job id} (its job's record has expired);
-- or {'global' | 'tenant' | 'model', who, current, limit} for a limit the job would pass, having
-- written nothing; otherwise writes the record, its ingest entries, every counter and the job's
-- entries in the global and the tenant's jobs index, {'ok', job id, requests sent straight to their
-- lane stream}.
-- Direct admission: a chunk's requests go straight to their lane stream when flow control has room
-- for them now, as the router's admit would send them (lib/lanes.lua); what does not fit goes to
-- the ingest stream with the chunk, its entry saying how many of the chunk's first requests were
-- sent already (skip field), and every later chunk of that model and lane follows it there, so
-- the requests of one (model, lane) keep their order.
local job, jobs_index, ingest, backlog, deadlines, idem_key, tenant_backlog, replayed_job =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local tenant_jobs, job_tenants = KEYS[9], KEYS[10]
local a = cmsgpack.unpack(ARGV[1])
local flows = key_groups(11, 1, #a.models)
local total, idem = tonumber(a.total), a.idempotency
if idem ~= '' then
  local seen = redis.call('GET', idem_key)
  if seen then
    local sep = string.find(seen, ':', 1, true)
    local seen_id = string.sub(seen, 1, sep - 1)
    if string.sub(seen, sep + 1) ~= string.sub(idem, string.find(idem, ':', 1, true) + 1) then
      return {'conflict', seen_id, '', ''}
    end
    if seen ~= a.replayed then
      return {'recheck', seen, '', ''}
    end
    if redis.call('EXISTS', replayed_job) == 0 then
      return {'gone', seen_id, '', ''}
    end
    return {'replay', seen_id, '', ''}
  end
end
local current = tonumber(redis.call('GET', backlog) or '0')
if current + total > tonumber(a.global_limit) then
  return {'global', '', tostring(current), a.global_limit}
end
local queued = tonumber(redis.call('HGET', tenant_backlog, a.tenant) or '0')
if queued + total > tonumber(a.tenant_limit) then
  return {'tenant', a.tenant, tostring(queued), a.tenant_limit}
end
for m, spec in ipairs(a.models) do
  local model, n, limit = spec[1], tonumber(spec[2]), spec[3]
  local c = tonumber(redis.call('HGET', flows[m][1], F.UNFINISHED) or '0')
  if c + n > tonumber(limit) then
    return {'model', model, tostring(c), limit}
  end
end
hset_all(job, a.record)
redis.call('ZADD', jobs_index, a.created_ms, a.job_id)
redis.call('ZADD', tenant_jobs, a.created_ms, a.job_id)
redis.call('HSET', job_tenants, a.job_id, a.tenant)
redis.call('ZADD', deadlines, a.expires_ms, a.job_id)
local room, send = lane_room(a.worker_group)
local sent_direct = 0
local deferred = {}  -- ring index -> true once a chunk of that model and lane went to the ingest stream
for _, chunk in ipairs(a.chunks) do
  if type(chunk) == 'string' then
    redis.call('XADD', ingest, '*', a.payload_field, chunk)
  else
    local blob, direct, ring, flow, lane, payloads = chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6]
    local sent = 0
    if not deferred[ring] then
      sent = room(direct, KEYS[ring], KEYS[flow], lane, #payloads)
      send(direct, lane, payloads, sent, a.payload_field)
      sent_direct = sent_direct + sent
    end
    if sent < #payloads then
      deferred[ring] = true
      if sent > 0 then
        redis.call('XADD', ingest, '*', a.payload_field, blob, a.skip_field, sent)
      else
        redis.call('XADD', ingest, '*', a.payload_field, blob)
      end
    end
  end
end
for m, spec in ipairs(a.models) do
  redis.call('HINCRBY', flows[m][1], F.UNFINISHED, spec[2])
end
redis.call('INCRBY', backlog, total)
redis.call('HINCRBY', tenant_backlog, a.tenant, total)
if idem ~= '' then
  redis.call('SET', idem_key, idem, 'EX', 86400)
end
return {'ok', a.job_id, tostring(sent_direct), ''}
