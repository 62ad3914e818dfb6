"""Wrappers of the scripts that change job records (lua/ beside this module): each names its KEYS
and ARGV, packs them (msgpack, shared/redis/luapack.py) and decodes the reply. Key names come from
`shared.redis.keys`; what the scripts decide is documented at the top of their `.lua` file."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.typing import EncodableT

from shared.core.states import JobStatus
from shared.redis import luapack, scripts
from shared.redis.keys import (
    DROP_FIELD,
    EVENT_FIELD,
    LANES,
    PAYLOAD_FIELD,
    REASON_FIELD,
    SKIP_FIELD,
    WORKER_GROUP,
    Keys,
)
from shared.wire.messages import DirectChunk


@dataclass
class CreateVerdict:
    verdict: str  # ok | replay | gone | conflict | recheck | global | tenant | model
    # the job id (ok, replay, gone, conflict), the idempotency key's value (recheck), the tenant or
    # the model over its limit
    who: str
    current: str
    limit: str


class CreateJob:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.k = keys
        self._script = scripts.register(r, __name__, "create_job")

    async def __call__(
        self,
        *,
        job_id: str,
        created_ms: int,
        expires_ms: int,
        record: dict[str, str | int],
        chunks: list[bytes | DirectChunk],
        model_totals: dict[str, int],
        model_limits: dict[str, int],
        global_limit: int,
        tenant: str,
        tenant_limit: int,
        idempotency_key: str | None,
        idempotency_value: str,
        replayed: str = "",
    ) -> CreateVerdict:
        """`replayed`: the idempotency key's value as last seen (`job_id:body_sha256`), so that the
        script can check its job still exists; the script answers `recheck` when it differs."""
        models = sorted(model_totals)
        k = self.k
        fixed = [
            k.job(job_id),
            k.jobs_index,
            k.ingest_stream,
            k.backlog_total,
            k.deadlines,
            idempotency_key or k.job(job_id),
            k.tenant_backlog,
            k.job(replayed.partition(":")[0]) if replayed else k.job(job_id),
            k.tenant_jobs(tenant),
            k.job_tenants,
            *(k.flow(m) for m in models),
        ]
        key_list = luapack.KeyList(fixed)
        packed = self._chunks(key_list, chunks)
        fields: list = []
        for name, value in record.items():
            fields += (name, str(value))
        args = {
            "job_id": job_id,
            "created_ms": str(created_ms),
            "expires_ms": str(expires_ms),
            "total": str(sum(model_totals.values())),
            "global_limit": str(global_limit),
            "payload_field": PAYLOAD_FIELD,
            "idempotency": idempotency_value,
            "replayed": replayed,
            "tenant": tenant,
            "tenant_limit": str(tenant_limit),
            "models": [(m, str(model_totals[m]), str(model_limits[m])) for m in models],
            "record": fields,
            "chunks": packed,
            "worker_group": WORKER_GROUP,
            "skip_field": SKIP_FIELD,
        }
        reply = await self._script(keys=key_list.keys, args=[luapack.pack(args)])
        return CreateVerdict(*(v.decode() for v in reply))

    def _chunks(self, key_list: luapack.KeyList, chunks: list[bytes | DirectChunk]) -> list:
        """Each chunk as the script reads it: an ingest entry, or one that may go straight to its
        lane stream with the KEYS indexes of its streams, staging ring and flow hash."""
        k, b = self.k, luapack.lua_bytes
        packed: list = []
        for c in chunks:
            if isinstance(c, bytes):
                packed.append(b(c))
                continue
            interactive, batch = k.model_streams(c.model)
            streams = [key_list.index(interactive), key_list.index(batch)]
            direct = [*streams, c.high_watermark, c.low_watermark, c.batch_bundle]
            ring, flow = key_list.index(k.staging_ring(c.model, c.lane)), key_list.index(k.flow(c.model))
            packed.append([b(c.chunk), direct, ring, flow, c.lane, [b(p) for p in c.payloads]])
        return packed


class MarkStarted:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.k = keys
        self._script = scripts.register(r, __name__, "mark_started")

    async def __call__(self, *, now_ms: int, by_job: dict[str, list[tuple[str, str]]]) -> list[list[str]]:
        """`by_job`: job id -> [(request_id, model)]; the verdicts, per job, in the same order."""
        keys: list[str] = []
        for job_id in by_job:
            keys += (self.k.job(job_id), self.k.job_requests(job_id))
        replies = await self._script(keys=keys, args=[now_ms, luapack.pack(list(by_job.values()))])
        return [[v.decode() for v in answers] for answers in replies]


class RecordResults:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.k = keys
        self._script = scripts.register(r, __name__, "record_results")

    async def __call__(
        self,
        *,
        group: str,
        ack_ids: list[bytes],
        models: list[str],
        by_job: dict[str, list],
        now_ms: int,
        now_rfc3339: str,
        ttl_s: int,
        events_maxlen: int,
        event_source: str,
        webhook_events_maxlen: int,
        spend: list[tuple[str, int]],
    ) -> tuple[int, list[tuple[str, str]]]:
        """`by_job`: job id -> [(request_id, model index (1-based, in `models`), status, prompt
        tokens, completion tokens, line, error code, serving model ('' if it never ran), busy µs,
        cost micro-dollars)]. `spend`: (key, TTL s) of the day's and the month's spend hashes.
        Returns (applied, [(job id, final status)])."""
        k = self.k
        keys = [
            k.results_stream,
            k.events_stream,
            k.backlog_total,
            k.deadlines,
            k.webhook_events,
            k.webhook_request_subscribers,
            k.tenant_backlog,
            k.webhook_events_dropped,
            *(key for key, _ in spend),
        ]
        for job_id in by_job:
            keys += k.job_keys(job_id)
        keys += (k.flow(m) for m in models)
        batch = luapack.pack([[luapack.lua_bytes(i) for i in ack_ids], models, list(by_job.values()), list(by_job)])
        args: list[EncodableT] = [
            group,
            now_ms,
            now_rfc3339,
            ttl_s,
            events_maxlen,
            event_source,
            EVENT_FIELD,
            batch,
            webhook_events_maxlen,
            *(ttl for _, ttl in spend),
        ]
        applied, finished = await self._script(keys=keys, args=args)
        pairs = [v.decode() for v in finished]
        return int(applied), list(zip(pairs[::2], pairs[1::2]))


class StopJob:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.k = keys
        self._script = scripts.register(r, __name__, "stop_job")

    async def __call__(self, *, job_id: str, stopping: JobStatus, models: list[str], now_ms: int) -> tuple[str, str]:
        """Returns (verdict: ok | stopping | finished | missing, detail)."""
        k = self.k
        keys = [k.job(job_id), k.results_stream, k.deadlines, k.stopping_jobs]
        lanes: list[str] = []
        for model in models:
            for lane in LANES:
                keys += (k.staging_queue(model, lane, job_id), k.staging_ring(model, lane), k.flow(model))
                lanes.append(lane)
        verdict, detail = await self._script(
            keys=keys, args=[stopping.value, now_ms, DROP_FIELD, REASON_FIELD, luapack.pack(lanes)]
        )
        return verdict.decode(), detail.decode()


class Requeue:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.k = keys
        self._script = scripts.register(r, __name__, "requeue")

    async def __call__(
        self, *, dead_id: str, job_id: str, request_id: str, model: str, lane: str, payload: bytes
    ) -> tuple[str, str]:
        """Returns (verdict: ok | gone | stopped | not_failed, the job's status before)."""
        k = self.k
        job, reqs, results = k.job_keys(job_id)
        keys = [
            k.dead_letter_stream,
            job,
            reqs,
            results,
            k.flow(model),
            k.backlog_total,
            k.staging_queue(model, lane, job_id),
            k.staging_ring(model, lane),
            k.tenant_backlog,
            k.deadlines,
        ]
        verdict, status = await self._script(
            keys=keys, args=[dead_id, request_id, model, payload, lane, int(time.time() * 1000), job_id]
        )
        return verdict.decode(), status.decode()
