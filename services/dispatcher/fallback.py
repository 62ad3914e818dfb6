"""The fallback mover: each second, judge every model's health and the spend limits, then move
the waiting requests of models that cannot serve them along their fallback chains
(shared/catalog/fallback.py), or end those a reached spend limit covers when no model may take them.

Per model with waiting work, per job (a job's requests share a tenant and a staging queue):
1. a reached spend limit covers the job's tenant on this model: everything waiting moves to the
   first model of the chain no reached limit covers, or ends `budget_exceeded`;
2. the model is unavailable: everything waiting moves to the first usable model of the chain;
3. otherwise, requests whose expected wait (waited so far + the requests ahead at the model's
   recent read rate) exceeds their max_queue_wait move.
Before the moves, the planner (services/dispatcher/planning/planner.py) plans every unfinished
job; the requests a `spill` job's own model will not finish by the job's deadline move to the
first usable model of the chain with reason `deadline`.
A usable model is one that is not unavailable and no reached limit covers for the tenant. Every
move is one atomic script (services/dispatcher/lua/move_waiting.lua); what it finds already read by a worker,
or already moved, it leaves.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import msgspec
import redis.asyncio as aioredis

from services.dispatcher.move_waiting import MoveBatch, MoveWaiting
from services.dispatcher.planning.planner import Planner, Spill
from shared.catalog.fallback import next_model
from shared.catalog.models import ModelsConfig
from shared.catalog.spend import LimitStatus, blocking, judge, publish_reached, read_spend
from shared.core.errors import REDIS_UNAVAILABLE
from shared.models.flow import failures_from, model_queues
from shared.models.health import HealthRecord, assess, decode_record
from shared.redis.keys import LANES, PAYLOAD_FIELD, WORKER_GROUP, JobField, Keys
from shared.wire.api import ModelQueue

log = logging.getLogger("inferq.fallback")


class _Waiting(msgspec.Struct):
    """What the mover reads of a routed request: its job, when it was accepted, its wait limit."""

    job_id: str
    accepted_ms: int
    max_queue_wait_ms: int | None = None


_waiting_decoder = msgspec.msgpack.Decoder(_Waiting | tuple[str, _Waiting])


@dataclass
class _Plan:
    """The moves of one tick for one model, grouped by (next model or None, reason)."""

    batches: dict[tuple[str | None, str], MoveBatch] = field(default_factory=dict)


class FallbackMover:
    def __init__(
        self, r: aioredis.Redis, keys: Keys, models: ModelsConfig, *, scan: int = 1000, planner: Planner | None = None
    ) -> None:
        self.r = r
        self.keys = keys
        self.models = models
        self.planner = planner
        self.queues: dict[str, ModelQueue] = {}
        self.scan = scan  # routed entries read per lane and tick
        self.limits = models.spend_limits()
        self._move = MoveWaiting(r)
        self.health: dict[str, HealthRecord] = {}
        self.reached: list[LimitStatus] = []

    async def tick(self) -> tuple[int, int]:
        """Judge, publish, move. Returns (moved, ended)."""
        now_ms = int(time.time() * 1000)
        await self.judge_health(now_ms)
        await self.judge_budgets()
        moved = ended = 0
        if self.planner is not None:
            try:
                planned = await self.planner.tick(now_ms, self.queues)
            except REDIS_UNAVAILABLE:
                raise
            except Exception:  # a planning bug must not stop the moves below
                log.exception("planner tick failed")
            else:
                moved += await self._spill(planned.spills, now_ms)
        for name, rec in self.health.items():
            cfg = self.models.models[name]
            if rec.waiting == 0 or not (cfg.fallback or self.reached):
                continue
            m, e = await self._serve(name, rec, now_ms)
            moved, ended = moved + m, ended + e
        return moved, ended

    async def judge_health(self, now_ms: int) -> None:
        cfgs = list(self.models.models.values())
        queues = await model_queues(self.r, self.keys, cfgs)
        self.queues = {name: q for name, (q, _) in queues.items()}
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.model_health)
            for cfg in cfgs:
                pipe.hgetall(self.keys.scaling_failures(cfg.name))
            prev_raw, *failures_raw = await pipe.execute()
        prev = {k.decode(): decode_record(v) for k, v in prev_raw.items()}
        records: dict[str, HealthRecord] = {}
        for cfg, fails in zip(cfgs, failures_raw):
            queue, marks = queues[cfg.name]
            failures = failures_from({k.decode(): v.decode() for k, v in fails.items()})
            rec = assess(cfg, prev.get(cfg.name), now_ms, queue, marks, failures)
            old = prev.get(cfg.name)
            if old is None or old.health.state != rec.health.state:
                log.log(
                    logging.INFO if rec.health.state == "serving" else logging.WARNING,
                    "model %s is %s: %s",
                    cfg.name,
                    rec.health.state,
                    rec.health.reason,
                    extra={"model": cfg.name},
                )
            records[cfg.name] = rec
        await self.r.hset(self.keys.model_health, mapping={n: msgspec.json.encode(r) for n, r in records.items()})  # type: ignore[misc]
        self.health = records

    async def judge_budgets(self) -> None:
        if not self.limits:
            return
        now = dt.datetime.now(dt.UTC)
        statuses = judge(self.limits, await read_spend(self.r, self.keys, now), now)
        reached = [s for s in statuses if s.reached]
        for s in reached:
            if s not in self.reached:
                log.warning(
                    "spend limit reached: %s (%.2f of %.2f USD) until %s",
                    s.limit.name,
                    s.spent_usd,
                    s.limit.usd,
                    dt.datetime.fromtimestamp(s.resets_at, dt.UTC).isoformat(),
                )
        self.reached = reached
        await publish_reached(self.r, self.keys, statuses)

    async def _spill(self, spills: list[Spill], now_ms: int) -> int:
        """Move what the planner says a job's own model will not finish by its deadline, from
        the head of the job's staging queue, to the first usable model of the chain."""
        if not spills:
            return 0
        tenants = await self._tenants(sorted({s.job_id for s in spills}))
        moved = 0
        for s in spills:
            tenant = tenants.get(s.job_id)
            to = next_model(self.models, s.model, self._usable(tenant)) if tenant is not None else None
            if to is None:
                continue
            b = MoveBatch(self.keys, s.model, to)
            b.queue(s.lane, s.job_id, most=s.requests)
            m, _ = await self._move(b, reason="deadline", now_ms=now_ms)
            if m:
                log.warning(
                    "%s: %d requests of job %s moved to %s to make its deadline",
                    s.model,
                    m,
                    s.job_id,
                    to,
                    extra={"model": s.model, "job_id": s.job_id, "reason": "deadline"},
                )
            moved += m
        return moved

    def _usable(self, tenant: str):
        def usable(model: str) -> bool:
            rec = self.health.get(model)
            return (rec is None or rec.health.state != "unavailable") and blocking(self.reached, tenant, model) is None

        return usable

    async def _serve(self, name: str, rec: HealthRecord, now_ms: int) -> tuple[int, int]:
        queued, routed = await self._waiting(name)
        jobs = {j for ids in queued.values() for j in ids} | {w.job_id for es in routed.values() for _, w in es}
        tenants = await self._tenants(sorted(jobs))
        plan = self._plan(name, rec, now_ms, queued, routed, tenants)
        moved = ended = 0
        for (to, reason), b in plan.batches.items():
            m, e = await self._move(b, reason=reason, now_ms=now_ms)
            if m or e:
                log.warning(
                    "%s: %d requests moved to %s, %d ended (%s)",
                    name,
                    m,
                    to,
                    e,
                    reason,
                    extra={"model": name, "reason": reason},
                )
            moved, ended = moved + m, ended + e
        return moved, ended

    async def _waiting(self, name: str) -> tuple[dict[str, list[str]], dict[str, list[tuple[bytes, _Waiting]]]]:
        """What waits for the model, per lane: the jobs with a staging queue, and the entries of its
        lane streams that no worker has read yet."""
        k = self.keys
        async with self.r.pipeline(transaction=False) as pipe:
            for lane in LANES:
                pipe.lrange(k.staging_ring(name, lane), 0, -1)
            for stream in k.model_streams(name):
                pipe.xinfo_groups(stream)
            replies = await pipe.execute(raise_on_error=False)
        queued: dict[str, list[str]] = {}  # lane -> job ids with a staging queue
        for lane, ring in zip(LANES, replies[:2]):
            head = len(k.staging_queue(name, lane, ""))
            queued[lane] = [q.decode()[head:] for q in ring]
        routed: dict[str, list[tuple[bytes, _Waiting]]] = {}
        for lane, stream, groups in zip(LANES, k.model_streams(name), replies[2:]):
            routed[lane] = await self._unread(stream, groups)
        return queued, routed

    def _plan(
        self,
        name: str,
        rec: HealthRecord,
        now_ms: int,
        queued: dict[str, list[str]],
        routed: dict[str, list[tuple[bytes, _Waiting]]],
        tenants: dict[str, str],
    ) -> _Plan:
        """The moves, batched per (target, reason): everything of a tenant the model cannot serve,
        and what would wait longer than its max_queue_wait at the model's read rate."""
        cfg = self.models.models[name]
        ms_each = 1000 / rec.read_rate if rec.read_rate > 0 else 0.0
        plan = _Plan()

        def batch(to: str | None, reason: str) -> MoveBatch:
            return plan.batches.setdefault((to, reason), MoveBatch(self.keys, name, to))

        ahead = {"interactive": 0, "batch": len(routed["interactive"])}
        for lane in LANES:
            for i, (entry_id, w) in enumerate(routed[lane]):
                tenant = tenants.get(w.job_id)
                if tenant is None:
                    continue
                to, reason = self._decide(name, tenant)
                if reason is None and to is not None and cfg.fallback and w.max_queue_wait_ms is not None:
                    waited = now_ms - w.accepted_ms + (ahead[lane] + i) * ms_each
                    if waited > w.max_queue_wait_ms:
                        reason = "max_queue_wait"
                if reason is not None and (to is not None or reason == "budget_exceeded"):
                    batch(to, reason).entry(lane, entry_id, w.job_id)
            for job_id in queued[lane]:
                tenant = tenants.get(job_id)
                if tenant is None:
                    continue
                to, reason = self._decide(name, tenant)
                if reason is not None and (to is not None or reason == "budget_exceeded"):
                    batch(to, reason).queue(lane, job_id, most=10_000)
                elif to is not None and cfg.fallback:
                    behind = ahead[lane] + len(routed[lane])
                    batch(to, "max_queue_wait").queue(lane, job_id, most=1000, ahead=behind, ms_each=ms_each)
        return plan

    def _decide(self, name: str, tenant: str) -> tuple[str | None, str | None]:
        """(next model, reason to move everything now): reason None means move only what is overdue."""
        to = next_model(self.models, name, self._usable(tenant))
        if blocking(self.reached, tenant, name) is not None:
            return to, "budget_exceeded"
        rec = self.health.get(name)
        if rec is not None and rec.health.state == "unavailable":
            return to, "unavailable"
        return to, None

    async def _unread(self, stream: str, groups) -> list[tuple[bytes, _Waiting]]:
        """Up to `scan` entries of `stream` the worker group has not read, oldest first."""
        if isinstance(groups, Exception):
            return []
        last = next(
            (g["last-delivered-id"] for g in groups if g["name"] in (WORKER_GROUP, WORKER_GROUP.encode())), None
        )
        if last is None:
            return []
        last = last.decode() if isinstance(last, bytes) else str(last)
        out: list[tuple[bytes, _Waiting]] = []
        for entry_id, fields in await self.r.xrange(stream, min="(" + last, max="+", count=self.scan):
            try:  # an entry moves whole; its first request stands for it (they are of one job)
                found = _waiting_decoder.decode(fields.get(PAYLOAD_FIELD.encode(), b""))
            except msgspec.DecodeError:
                continue  # the worker that reads it dead-letters it
            out.append((entry_id, found[1] if isinstance(found, tuple) else found))
        return out

    async def _tenants(self, job_ids: list[str]) -> dict[str, str]:
        """Tenant of each job still running; jobs that are gone are left out."""
        if not job_ids:
            return {}
        async with self.r.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self.keys.job(job_id), [JobField.STATUS, JobField.TENANT])
            rows = await pipe.execute()
        return {j: (t or b"default").decode() for j, (st, t) in zip(job_ids, rows) if st is not None}


async def fallback_tick(ctx: dict) -> tuple[int, int]:
    """arq cron, every second."""
    return await ctx["fallback"].tick()
