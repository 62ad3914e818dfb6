"""The job record in Redis, and the only code that changes it.

A job is three keys (see `Keys.job_keys`): a hash with status, counts, usage and timestamps; a hash
request_id -> 'r'|'d' that makes each start and each result count exactly once; and a stream of
finished result lines whose entry ids are the results cursor. Counts that can be derived are:
queued = total - running - terminal.

Every change runs as one Lua script (shared/jobs/lua, called through shared/jobs/scripts.py), together
with the XACK of the message that caused it, so a crash never leaves a change half made or a message
acknowledged without effect.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import cast

import msgspec
import redis.asyncio as aioredis

from shared.catalog.budgets import PERIOD_TTL_S, PERIODS, period_id
from shared.catalog.money import usd
from shared.core.errors import (
    AdmissionRejected,
    IdempotencyConflict,
    IdempotentJobExpired,
    RequeueRefused,
    StopRefused,
    TenantLimitReached,
)
from shared.core.states import FINAL_REQUEST_STATES, STOP_FOR_REASON, STOPPING_JOB_STATES, JobStatus, RequestStatus
from shared.jobs.scripts import CreateJob, CreateVerdict, MarkStarted, RecordResults, Requeue, StopJob
from shared.ops import metrics
from shared.redis import luapack
from shared.redis.keys import JobField, Keys, UsageField, model_field
from shared.wire.api import DeadlineRisk, Job, JobUsage, JobWebhookInfo, ModelUsage, Priority, RequestCounts
from shared.wire.events import SOURCE as EVENT_SOURCE
from shared.wire.messages import DirectChunk, ResultRecord

EVENTS_MAXLEN = 100_000
WEBHOOK_EVENTS_MAXLEN = 1_000_000
NO_LIMIT = 2**62


class JobStore:
    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        job_ttl_s: int = 7 * 24 * 3600,
        events_maxlen: int = EVENTS_MAXLEN,
        webhook_events_maxlen: int = WEBHOOK_EVENTS_MAXLEN,
    ) -> None:
        self.r = r
        self.keys = keys
        self.job_ttl_s = job_ttl_s
        self.events_maxlen = events_maxlen
        self.webhook_events_maxlen = webhook_events_maxlen
        self._create = CreateJob(r, keys)
        self._mark_started = MarkStarted(r, keys)
        self._record_results = RecordResults(r, keys)
        self._stop = StopJob(r, keys)
        self._requeue = Requeue(r, keys)

    async def create(
        self,
        job_id: str,
        created_ms: int,
        model_totals: dict[str, int],
        metadata: dict[str, str],
        chunks: list[bytes | DirectChunk],
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
        with the same (tenant, Idempotency-Key, body) created. Raises AdmissionRejected,
        IdempotencyConflict or IdempotentJobExpired (that job's record is gone), having written nothing."""
        expires_ms = expires_ms or created_ms + 24 * 3600 * 1000
        limits = model_limits or {}
        idem_key, idem_value = None, ""
        if idempotency:
            tenant, key, body_hash = idempotency
            idem_key, idem_value = self.keys.idempotency(tenant, key), f"{job_id}:{body_hash}"
        record = _job_record(job_id, created_ms, expires_ms, priority, model_totals, metadata, extra, tenant)
        replayed = ""
        while True:  # `recheck` again only if the key's value changed in between (it expired and was reused)
            v = await self._create(
                job_id=job_id,
                created_ms=created_ms,
                expires_ms=expires_ms,
                record=record,
                chunks=chunks,
                model_totals=model_totals,
                model_limits={m: limits.get(m, NO_LIMIT) for m in model_totals},
                global_limit=global_limit,
                tenant=tenant,
                tenant_limit=tenant_limit,
                idempotency_key=idem_key,
                idempotency_value=idem_value,
                replayed=replayed,
            )
            if v.verdict != "recheck":
                return _created(v)
            replayed = v.who

    async def mark_started(self, started: list[tuple[str, str, str]], now_ms: int | None = None) -> list[str]:
        """Mark (job_id, request_id, model) as running, if its job still runs. Returns a verdict per
        request: 'run', or, for requests that must not run, the RequestStatus their job's stop gives
        them or 'gone'.
        Repeated marks (redeliveries) are no-ops that still answer 'run'."""
        if not started:
            return []
        by_job: dict[str, list[int]] = {}
        for i, (job_id, _, _) in enumerate(started):
            by_job.setdefault(job_id, []).append(i)
        groups = {job_id: [(started[i][1], started[i][2]) for i in idx] for job_id, idx in by_job.items()}
        replies = await self._mark_started(now_ms=now_ms or _now_ms(), by_job=groups)
        verdicts = [""] * len(started)
        for idx, answers in zip(by_job.values(), replies):
            for i, v in zip(idx, answers):
                verdicts[i] = v
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
                (
                    rec.request_id,
                    m,
                    rec.status,
                    rec.prompt_tokens,
                    rec.completion_tokens,
                    luapack.lua_bytes(rec.line),
                    rec.error_code,
                    rec.served_by,
                    rec.busy_us,
                    rec.cost_micros,
                )
            )
        today = datetime.fromtimestamp(now, tz=UTC)
        return await self._record_results(
            group=group,
            ack_ids=ack_ids,
            models=list(models),
            by_job=jobs,
            now_ms=int(now * 1000),
            now_rfc3339=_rfc3339(now),
            ttl_s=self.job_ttl_s,
            events_maxlen=self.events_maxlen,
            event_source=EVENT_SOURCE,
            webhook_events_maxlen=self.webhook_events_maxlen,
            spend=[(self.keys.spend(p, period_id(p, today)), PERIOD_TTL_S[p]) for p in PERIODS],
        )

    async def stop(self, job_id: str, reason: str) -> str:
        """Cancel (`reason` RequestStatus.CANCELLED) or expire (EXPIRED) a job. Returns the status it
        is in now (its STOPPING_JOB_STATES key); idempotent. Raises StopRefused for a finished or missing job."""
        status = STOP_FOR_REASON[RequestStatus(reason)]
        verdict, detail = await self._stop(
            job_id=job_id, stopping=status, models=await self.models_of(job_id), now_ms=_now_ms()
        )
        if verdict == "ok":
            return status
        if verdict == "stopping":
            return detail
        raise StopRefused(detail or None)

    async def requeue(self, dead_id: str, job_id: str, request_id: str, model: str, lane: str, payload: bytes) -> str:
        """Stage a dead-lettered request again, undoing its recorded failure. Returns the status the job
        had (a completed one is reopened); raises RequeueRefused when the request cannot run again
        (nothing is changed then)."""
        verdict, status = await self._requeue(
            dead_id=dead_id, job_id=job_id, request_id=request_id, model=model, lane=lane, payload=payload
        )
        if verdict in RequeueRefused.REASONS:
            raise RequeueRefused(verdict, status)
        return status

    async def models_of(self, job_id: str) -> list[str]:
        """Every model holding or about to hold requests of the job: its own and their fallbacks."""
        routes, models = await self.r.hmget(self.keys.job(job_id), [JobField.ROUTES, JobField.MODELS])  # type: ignore[misc]
        raw = routes or models
        return msgspec.json.decode(raw, type=list[str]) if raw else []

    async def due_for_expiry(self, now_ms: int | None = None, limit: int = 100) -> list[str]:
        due = await self.r.zrangebyscore(self.keys.deadlines, "-inf", now_ms or _now_ms(), start=0, num=limit)
        return [d.decode() for d in due]

    async def get(self, job_id: str) -> Job | None:
        raw = await self.r.hgetall(self.keys.job(job_id))  # type: ignore[misc]
        if not raw:
            return None
        return job_from_hash({k.decode(): v.decode() for k, v in raw.items()})

    async def status_and_tenant(self, job_id: str) -> tuple[str | None, str]:
        status, tenant = await self.r.hmget(self.keys.job(job_id), [JobField.STATUS, JobField.TENANT])  # type: ignore[misc]
        return (status.decode() if status else None), (tenant.decode() if tenant else "default")

    async def ended_ms(self, job_id: str) -> int | None:
        """When the job ended (ms), as its job.* event id says; None while it runs."""
        value = await self.r.hget(self.keys.job(job_id), JobField.ENDED_MS)  # type: ignore[misc]
        return int(value) if value else None

    async def status(self, job_id: str) -> str | None:
        value = await self.r.hget(self.keys.job(job_id), JobField.STATUS)  # type: ignore[misc]
        return value.decode() if value else None

    async def stopping(self, job_ids: list[str]) -> dict[str, str]:
        """Of these jobs, the ones being stopped, with what their unfinished requests become
        (a RequestStatus value): one round trip, for workers that abort what such jobs still run."""
        async with self.r.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.keys.job(job_id), JobField.STATUS)
            statuses = await pipe.execute()
        return {
            job_id: STOPPING_JOB_STATES[st.decode()][1].value
            for job_id, st in zip(job_ids, statuses)
            if st is not None and st.decode() in STOPPING_JOB_STATES
        }

    async def read_results(self, job_id: str, after: str | None, limit: int) -> list[tuple[bytes, bytes]]:
        """Result lines after cursor `after` (exclusive), oldest first: [(cursor, json line)]."""
        start = f"({after}" if after else "-"
        entries = await self.r.xrange(self.keys.job_results(job_id), min=start, max="+", count=limit)
        return [(entry_id, fields[b"l"]) for entry_id, fields in entries]


def _job_record(
    job_id: str,
    created_ms: int,
    expires_ms: int,
    priority: str,
    model_totals: dict[str, int],
    metadata: dict[str, str],
    extra: dict[str, str] | None,
    tenant: str,
) -> dict[str, str | int]:
    """The job hash as it is written at creation: every request queued."""
    record: dict[str, str | int] = {
        JobField.ID: job_id,
        JobField.STATUS: JobStatus.QUEUED.value,
        JobField.PRIORITY: priority,
        JobField.CREATED_MS: created_ms,
        JobField.EXPIRES_MS: expires_ms,
        JobField.TOTAL: sum(model_totals.values()),
        JobField.DONE: 0,
        JobField.METADATA: msgspec.json.encode(metadata).decode(),
        JobField.MODELS: msgspec.json.encode(sorted(model_totals)).decode(),
    }
    for model, n in model_totals.items():
        record[model_field(model, JobField.TOTAL)] = n
    record.update(extra or {})
    record[JobField.TENANT] = tenant
    return record


def _created(v: CreateVerdict) -> str:
    """The id of the job that stands after the creation script, or the error it refused with."""
    if v.verdict == "ok":
        metrics.ROUTED_AT_CREATION.inc(int(v.current or 0))
        return v.who
    if v.verdict == "replay":
        return v.who
    if v.verdict == "conflict":
        raise IdempotencyConflict(v.who)
    if v.verdict == "gone":
        raise IdempotentJobExpired(v.who)
    if v.verdict == "tenant":
        raise TenantLimitReached(v.who, int(v.current), int(v.limit))
    raise AdmissionRejected(v.who or None, int(v.current), int(v.limit))


def job_from_hash(h: dict[str, str]) -> Job:
    def counts(prefix: str) -> RequestCounts:
        c = {s: int(h.get(f"{prefix}{s}", 0)) for s in (JobField.TOTAL, JobField.RUNNING, *FINAL_REQUEST_STATES)}
        queued = c[JobField.TOTAL] - c[JobField.RUNNING] - sum(c[s] for s in FINAL_REQUEST_STATES)
        return RequestCounts(queued=queued, **c)

    def seconds(field: str) -> int | None:
        return int(h[field]) // 1000 if field in h else None

    status = h[JobField.STATUS]
    ended = seconds(JobField.ENDED_MS)
    models = msgspec.json.decode(h.get(JobField.MODELS, "[]"), type=list[str])
    deadline = seconds(JobField.DEADLINE_MS)
    running = ended is None and JobField.ETA_MS in h
    return Job(
        id=h[JobField.ID],
        status=status,
        priority=cast(Priority, h.get(JobField.PRIORITY, "batch")),  # as the job was created
        created_at=int(h[JobField.CREATED_MS]) // 1000,
        started_at=seconds(JobField.STARTED_MS),
        expires_at=seconds(JobField.EXPIRES_MS),
        completed_at=ended if status == JobStatus.COMPLETED else None,
        cancelling_at=seconds(JobField.STOP_MS) if status in (JobStatus.CANCELLING, JobStatus.CANCELLED) else None,
        cancelled_at=ended if status == JobStatus.CANCELLED else None,
        expired_at=ended if status == JobStatus.EXPIRED else None,
        request_counts=counts(""),
        models={m: counts(model_field(m, "")) for m in models},
        usage=job_usage(h),
        metadata=msgspec.json.decode(h.get(JobField.METADATA, "{}"), type=dict[str, str]),
        webhook=msgspec.json.decode(h[JobField.WEBHOOK], type=JobWebhookInfo) if JobField.WEBHOOK in h else None,
        deadline=deadline,
        on_deadline_risk=cast(DeadlineRisk, h.get(JobField.ON_DEADLINE_RISK, "best_effort")) if deadline else None,
        estimated_completion_at=-(-int(h[JobField.ETA_MS]) // 1000) if running else None,
        deadline_at_risk=(h.get(JobField.AT_RISK) == "1") if running and deadline else None,
    )


def job_usage(h: dict[str, str]) -> JobUsage:
    """Tokens, and busy time and cost in all and per serving model (in name order), from the
    integer sums the collector keeps (`UsageField`, shared/redis/keys.py)."""

    def num(field: str) -> int:
        return int(h.get(field, 0))

    suffix = ":" + UsageField.SERVED
    served = sorted(
        f[2 : -len(suffix)] for f in h if f.startswith("m:") and f.endswith(suffix) and len(f) > 2 + len(suffix)
    )
    return JobUsage(
        prompt_tokens=num(JobField.PROMPT_TOKENS),
        completion_tokens=num(JobField.COMPLETION_TOKENS),
        gpu_seconds=usd(num(UsageField.BUSY_US)),
        cost=usd(num(UsageField.COST_MICROS)),
        by_model={
            m: ModelUsage(
                requests=num(model_field(m, UsageField.SERVED)),
                gpu_seconds=usd(num(model_field(m, UsageField.BUSY_US))),
                cost=usd(num(model_field(m, UsageField.COST_MICROS))),
            )
            for m in served
        },
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
