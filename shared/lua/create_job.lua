-- uses: hash keys
-- Create a job: idempotency, admission, then the whole job, or nothing.
-- KEYS: job, jobs index, ingest stream, backlog total, deadlines, idempotency key (the job key
--       again when there is none), tenant backlog hash, the record of the job the idempotency key
--       was seen with (`replayed`; the job key again when none), the tenant's jobs index, the
--       job -> tenant hash, then the flow hash of each model.
-- ARGV[1] msgpack map: job_id, created_ms, total, global_limit, payload_field, expires_ms,
--       idempotency ('' = none), replayed (the idempotency key's value the caller saw, '' = none),
--       tenant, tenant_limit, models (list of (model, count, limit), in flow-key order), record
--       (flat list of field, value), chunks (list of ingest entries).
-- Guarantees: for a seen idempotency key returns {'conflict', job id} (another body),
-- {'recheck', value} (the same body, but the key's value is not `replayed`: call again with that
-- value and its job's key), {'replay', job id}, or {'gone', job id} (its job's record has expired);
-- or {'global' | 'tenant' | 'model', who, current, limit} for a limit the job would pass, having
-- written nothing; otherwise writes the record, its ingest entries, every counter and the job's
-- entries in the global and the tenant's jobs index, {'ok', job id}.
local job, jobs_index, ingest, backlog, deadlines, idem_key, tenant_backlog, replayed_job =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local tenant_jobs, job_tenants = KEYS[9], KEYS[10]
local a = cmsgpack.unpack(ARGV[1])
local flows = key_groups(11, 1)
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
for _, chunk in ipairs(a.chunks) do
  redis.call('XADD', ingest, '*', a.payload_field, chunk)
end
for m, spec in ipairs(a.models) do
  redis.call('HINCRBY', flows[m][1], F.UNFINISHED, spec[2])
end
redis.call('INCRBY', backlog, total)
redis.call('HINCRBY', tenant_backlog, a.tenant, total)
if idem ~= '' then
  redis.call('SET', idem_key, idem, 'EX', 86400)
end
return {'ok', a.job_id, '', ''}
