"""The job record in Redis, and the only code that changes it.

A job is three keys (see `Keys.job_keys`): a hash with status, counts, usage and timestamps; a hash
request_id -> 'r'|'d' that makes each start and each result count exactly once; and a stream of
finished result lines whose entry ids are the results cursor. Counts that can be derived are:
queued = total - running - terminal.

Every change runs as one Lua script (shared/job_scripts.py), together with the XACK of the message
that caused it, so a crash never leaves a change half made or a message acknowledged without effect.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import msgspec
import redis.asyncio as aioredis

from shared import job_scripts, luapack
from shared.api import Job, JobWebhookInfo, RequestCounts, Usage
from shared.events import SOURCE as EVENT_SOURCE
from shared.keys import DROP_FIELD, EVENT_FIELD, LANES, PAYLOAD_FIELD, REASON_FIELD, Keys

TERMINAL_REQUEST_STATES = ("succeeded", "failed", "cancelled", "expired")
TERMINAL_JOB_STATES = ("completed", "failed", "cancelled", "expired")
# A job being stopped, and the final state its unfinished requests take.
STOPPING_JOB_STATES = {"cancelling": "cancelled", "expiring": "expired"}
EVENTS_MAXLEN = 100_000
NO_LIMIT = 2**62


class ResultRecord(msgspec.Struct, array_like=True):
    """What the collector needs of one result to apply it; `line` is the stored JSON line."""

    job_id: str
    request_id: str
    model: str
    status: str
    prompt_tokens: int
    completion_tokens: int
    line: bytes
    error_code: str = ""


class AdmissionRejected(Exception):
    """Accepting the job would push a model's (or the overall) unfinished backlog over its limit."""

    def __init__(self, model: str | None, current: int, limit: int) -> None:
        super().__init__(f"backlog of {model or 'all models'} is {current}; limit {limit}")
        self.model = model
        self.current = current
        self.limit = limit


class TenantLimitReached(Exception):
    """Accepting the job would push the tenant's unfinished requests over its limit."""

    def __init__(self, tenant: str, current: int, limit: int) -> None:
        super().__init__(f"tenant {tenant} has {current} unfinished requests; limit {limit}")
        self.tenant = tenant
        self.current = current
        self.limit = limit


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used for a different body within 24 h."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class StopRefused(Exception):
    """Cancel or expire of a job that is finished (`status`) or does not exist (`status` None)."""

    def __init__(self, status: str | None) -> None:
        super().__init__(status or "missing")
        self.status = status


class JobStore:
    def __init__(self, r: aioredis.Redis, keys: Keys, job_ttl_s: int = 7 * 24 * 3600, events_maxlen: int = EVENTS_MAXLEN) -> None:
        self.r = r
        self.keys = keys
        self.job_ttl_s = job_ttl_s
        self.events_maxlen = events_maxlen
        self._create = r.register_script(job_scripts.CREATE)
        self._mark_started = r.register_script(job_scripts.MARK_STARTED)
        self._record_results = r.register_script(job_scripts.RECORD_RESULTS)
        self._stop = r.register_script(job_scripts.STOP)
        self._requeue = r.register_script(job_scripts.REQUEUE)

    async def create(
        self,
        job_id: str,
        created_ms: int,
        model_totals: dict[str, int],
        metadata: dict[str, str],
        chunks: list[bytes],
        *,
        priority: str = "batch",
        expires_ms: int | None = None,
        model_limits: dict[str, int] | None = None,
        global_limit: int = NO_LIMIT,
        idempotency: tuple[str, str, str] | None = None,
        extra: dict[str, str] | None = None,
        tenant: str = "default",
        tenant_limit: int = NO_LIMIT,
    ) -> str:
        """Check the idempotency key and admission limits, then write the job record with all its
        ingest entries, in one Lua script: either the whole job exists, with every request queued,
        or nothing of it does. Returns the id of the job created, or of the job an earlier request
        with the same (tenant, Idempotency-Key, body) created. Raises AdmissionRejected or
        IdempotencyConflict, having written nothing."""
        total = sum(model_totals.values())
        expires_ms = expires_ms or created_ms + 24 * 3600 * 1000
        record: dict[str, str | int] = {
            "id": job_id,
            "status": "queued",
            "priority": priority,
            "created_ms": created_ms,
            "expires_ms": expires_ms,
            "total": total,
            "done": 0,
            "metadata": msgspec.json.encode(metadata).decode(),
            "models": msgspec.json.encode(sorted(model_totals)).decode(),
        }
        for model, n in model_totals.items():
            record[f"m:{model}:total"] = n
        record.update(extra or {})
        models = sorted(model_totals)
        limits = model_limits or {}
        idem_key, idem_value = self.keys.job(job_id), ""
        if idempotency:
            tenant, key, body_hash = idempotency
            idem_key, idem_value = self.keys.idempotency(tenant, key), f"{job_id}:{body_hash}"
        keys = [self.keys.job(job_id), self.keys.jobs_index, self.keys.ingest_stream, self.keys.backlog_total,
                self.keys.deadlines, idem_key, *(self.keys.flow(m) for m in models), self.keys.tenant_backlog]
        args: list[str | int | bytes] = [job_id, created_ms, total, global_limit, PAYLOAD_FIELD, expires_ms, idem_value, len(models)]
        for m in models:
            args += (m, model_totals[m], limits.get(m, NO_LIMIT))
        record["tenant"] = tenant
        args += (tenant, tenant_limit, len(record))
        for k, v in record.items():
            args += (k, v)
        args += chunks
        verdict, existing, current, limit = (v.decode() for v in await self._create(keys=keys, args=args))
        if verdict == "ok" or verdict == "replay":
            return existing
        if verdict == "conflict":
            raise IdempotencyConflict(existing)
        if verdict == "tenant":
            raise TenantLimitReached(existing, int(current), int(limit))
        raise AdmissionRejected(existing or None, int(current), int(limit))

    async def mark_started(self, started: list[tuple[str, str, str]], now_ms: int | None = None) -> list[str]:
        """Mark (job_id, request_id, model) as running, if its job still runs. Returns a verdict per
        request: 'run', or 'cancelled' / 'expired' / 'gone' for requests that must not run.
        Repeated marks (redeliveries) are no-ops that still answer 'run'."""
        if not started:
            return []
        by_job: dict[str, list[int]] = {}
        for i, (job_id, _, _) in enumerate(started):
            by_job.setdefault(job_id, []).append(i)
        keys: list[str] = []
        groups: list[list[tuple[str, str]]] = []
        for job_id, idx in by_job.items():
            keys += (self.keys.job(job_id), self.keys.job_requests(job_id))
            groups.append([(started[i][1], started[i][2]) for i in idx])
        replies = await self._mark_started(keys=keys, args=[now_ms or _now_ms(), luapack.pack(groups)])
        verdicts = [""] * len(started)
        for idx, answers in zip(by_job.values(), replies):
            for i, v in zip(idx, answers):
                verdicts[i] = v.decode()
        return verdicts

    async def record_results(
        self, group: str, ack_ids: list[bytes], records: list[ResultRecord]
    ) -> tuple[int, list[tuple[str, str]]]:
        """Apply results and acknowledge their results-stream entries atomically.

        Returns (results applied, [(job id, final status)] of the jobs this call finished). A result
        whose request already has one, or whose job is finished or gone, is acknowledged and ignored."""
        now = time.time()
        models: dict[str, int] = {}
        jobs: dict[str, list] = {}
        for rec in records:
            m = models.setdefault(rec.model, len(models) + 1)
            jobs.setdefault(rec.job_id, []).append(
                (rec.request_id, m, rec.status, rec.prompt_tokens, rec.completion_tokens, luapack.lua_bytes(rec.line), rec.error_code))
        keys = [self.keys.results_stream, self.keys.events_stream, self.keys.backlog_total, self.keys.deadlines,
                self.keys.webhook_events, self.keys.webhook_request_subscribers, self.keys.tenant_backlog]
        for job_id in jobs:
            keys += self.keys.job_keys(job_id)
        keys += (self.keys.flow(m) for m in models)
        batch = luapack.pack([[luapack.lua_bytes(i) for i in ack_ids], list(models), list(jobs.values()), list(jobs)])
        args = [group, int(now * 1000), _rfc3339(now), self.job_ttl_s, self.events_maxlen, EVENT_SOURCE, EVENT_FIELD, batch]
        applied, finished = await self._record_results(keys=keys, args=args)
        pairs = [v.decode() for v in finished]
        return int(applied), list(zip(pairs[::2], pairs[1::2]))

    async def stop(self, job_id: str, reason: str) -> str:
        """Cancel (`reason` 'cancelled') or expire ('expired') a job. Returns the status it is in
        now ('cancelling' / 'expiring'); idempotent. Raises StopRefused for a finished or missing job."""
        status = {"cancelled": "cancelling", "expired": "expiring"}[reason]
        models = await self.models_of(job_id)
        keys = [self.keys.job(job_id), self.keys.results_stream, self.keys.deadlines]
        fields: list[str] = []
        for model in models:
            for lane in LANES:
                keys += (self.keys.staging_queue(model, lane, job_id), self.keys.staging_ring(model, lane), self.keys.flow(model))
                fields.append(f"staged:{lane}")
        verdict, detail = (v.decode() for v in await self._stop(
            keys=keys, args=[status, reason, _now_ms(), DROP_FIELD, REASON_FIELD, *fields]))
        if verdict == "ok":
            return status
        if verdict == "stopping":
            return detail
        raise StopRefused(detail or None)

    async def requeue(self, dead_id: str, job_id: str, request_id: str, model: str, lane: str, payload: bytes) -> tuple[str, str]:
        """Stage a dead-lettered request again, undoing its recorded failure. Returns (verdict, job status)."""
        job, reqs, results = self.keys.job_keys(job_id)
        keys = [self.keys.dead_letter_stream, job, reqs, results, self.keys.flow(model), self.keys.backlog_total,
                self.keys.staging_queue(model, lane, job_id), self.keys.staging_ring(model, lane), self.keys.tenant_backlog]
        verdict, status = await self._requeue(keys=keys, args=[dead_id, request_id, model, payload, f"staged:{lane}"])
        return verdict.decode(), status.decode()

    async def models_of(self, job_id: str) -> list[str]:
        raw = await self.r.hget(self.keys.job(job_id), "models")
        return msgspec.json.decode(raw, type=list[str]) if raw else []

    async def due_for_expiry(self, now_ms: int | None = None, limit: int = 100) -> list[str]:
        due = await self.r.zrangebyscore(self.keys.deadlines, "-inf", now_ms or _now_ms(), start=0, num=limit)
        return [d.decode() for d in due]

    async def get(self, job_id: str) -> Job | None:
        raw = await self.r.hgetall(self.keys.job(job_id))
        if not raw:
            return None
        return job_from_hash({k.decode(): v.decode() for k, v in raw.items()})

    async def status_and_tenant(self, job_id: str) -> tuple[str | None, str]:
        status, tenant = await self.r.hmget(self.keys.job(job_id), "status", "tenant")
        return (status.decode() if status else None), (tenant.decode() if tenant else "default")

    async def status(self, job_id: str) -> str | None:
        value = await self.r.hget(self.keys.job(job_id), "status")
        return value.decode() if value else None

    async def stopping(self, job_ids: list[str]) -> dict[str, str]:
        """Of these jobs, the ones being stopped, with what their unfinished requests become
        ('cancelled' / 'expired'): one round trip, for workers that abort what such jobs still run."""
        async with self.r.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.keys.job(job_id), "status")
            statuses = await pipe.execute()
        return {job_id: STOPPING_JOB_STATES[st.decode()] for job_id, st in zip(job_ids, statuses)
                if st is not None and st.decode() in STOPPING_JOB_STATES}

    async def read_results(self, job_id: str, after: str | None, limit: int) -> list[tuple[bytes, bytes]]:
        """Result lines after cursor `after` (exclusive), oldest first: [(cursor, json line)]."""
        start = f"({after}" if after else "-"
        entries = await self.r.xrange(self.keys.job_results(job_id), min=start, max="+", count=limit)
        return [(entry_id, fields[b"l"]) for entry_id, fields in entries]


def job_from_hash(h: dict[str, str]) -> Job:
    def counts(prefix: str) -> RequestCounts:
        c = {s: int(h.get(f"{prefix}{s}", 0)) for s in ("total", "running", *TERMINAL_REQUEST_STATES)}
        c["queued"] = c["total"] - c["running"] - sum(c[s] for s in TERMINAL_REQUEST_STATES)
        return RequestCounts(**c)

    def seconds(field: str) -> int | None:
        return int(h[field]) // 1000 if field in h else None

    status = h["status"]
    ended = seconds("ended_ms")
    models = msgspec.json.decode(h.get("models", "[]"), type=list[str])
    return Job(
        id=h["id"],
        status=status,
        priority=h.get("priority", "batch"),
        created_at=int(h["created_ms"]) // 1000,
        started_at=seconds("started_ms"),
        expires_at=seconds("expires_ms"),
        completed_at=ended if status == "completed" else None,
        cancelling_at=seconds("stop_ms") if status in ("cancelling", "cancelled") else None,
        cancelled_at=ended if status == "cancelled" else None,
        expired_at=ended if status == "expired" else None,
        request_counts=counts(""),
        models={m: counts(f"m:{m}:") for m in models},
        usage=Usage(prompt_tokens=int(h.get("prompt_tokens", 0)), completion_tokens=int(h.get("completion_tokens", 0))),
        metadata=msgspec.json.decode(h.get("metadata", "{}"), type=dict[str, str]),
        webhook=msgspec.json.decode(h["webhook"], type=JobWebhookInfo) if "webhook" in h else None,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
