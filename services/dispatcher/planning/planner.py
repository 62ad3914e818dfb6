"""The planner: each second, from the unfinished jobs and each model's fleet and measured speed,
the finish every job is headed for, which deadlines are at risk, the replicas the deadlines need,
and what a `spill` job must move down its fallback chain to make its deadline.

It runs in the fallback cron (one dispatcher at a time), before the moves, and writes:
- each model's plan (shared/planning/plan.py), which quotes and the autoscaler read;
- each unfinished job's `eta_ms`, and for a deadline found at risk the first time,
  `risk_ms` and a job.deadline_at_risk event, in one script (lua/mark_plan.lua).

What a job still has on a model is read from its hash: the requests it named the model for, less
those finished, less those the fallback mover took elsewhere (`m:<model>:moved`) and that have
not finished there yet (judged by what the other models of its routes served). At most MAX_JOBS
unfinished jobs are planned per tick, those whose completion window ends first.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.typing import EncodableT

from services.dispatcher.planning.calibration import FULL_REQUEST_S, UTILIZATION, Calibration
from shared.catalog.models import ModelConfig, ModelsConfig
from shared.core.states import FINAL_REQUEST_STATES
from shared.models.start_phases import read_all as read_start_phases
from shared.planning import accuracy
from shared.planning import plan as plans
from shared.planning.plan import ModelPlan, Speed
from shared.planning.schedule import Backlog, QueuedWork, replicas_for, work_within
from shared.planning.timing import PlanTiming
from shared.redis import luapack, scripts
from shared.redis.keys import EVENT_FIELD, MOVED, JobField, Keys, UsageField, model_field
from shared.wire.api import ModelQueue, RequestCounts
from shared.wire.events import DeadlineRisk, deadline_risk_json, rfc3339_ms

log = logging.getLogger("inferq.planner")
MAX_JOBS = 2000
DEFAULT_BOOT_S = 10.0  # a replica's start before one was measured (shared/models/start_phases.py)
SPREAD_EVERY_S = 10.0  # how often the measured quote errors are read again
UTILIZATION_KEEP = 0.95  # what a tick keeps of the utilization sums before adding its own
UTILIZATION_PRIOR_S = 5.0  # replica-seconds the kept utilization weighs when the planner starts
FULL_COST_PRIOR = 100.0  # results the kept busy time per result weighs when the planner starts
FULL_TIMES = 4  # a model is full while its unfinished requests fill its slots this many times
_HEAD = [
    JobField.ID,
    JobField.STATUS,
    JobField.PRIORITY,
    JobField.DEADLINE_MS,
    JobField.ON_DEADLINE_RISK,
    JobField.MODELS,
    JobField.ROUTES,
    JobField.TOTAL,
    *FINAL_REQUEST_STATES,
    JobField.RUNNING,
]


@dataclass
class Fleet:
    current: int
    desired: int
    most: int
    boot_s: float


@dataclass
class _Job:
    job_id: str
    lane: str
    deadline_ms: int
    on_risk: str
    counts: RequestCounts
    own: dict[str, int] = field(default_factory=dict)  # model -> requests still to do there
    away: dict[str, int] = field(default_factory=dict)  # fallback model -> moved requests not done


@dataclass
class Spill:
    """Requests of a job to move down its model's chain now, for its deadline."""

    model: str
    job_id: str
    lane: str
    requests: int


@dataclass
class PlanTick:
    plans: dict[str, ModelPlan]
    spills: list[Spill]
    fired: int


class Planner:
    def __init__(
        self, r: aioredis.Redis, keys: Keys, models: ModelsConfig, *, events_maxlen: int, webhook_events_maxlen: int
    ) -> None:
        self.r = r
        self.keys = keys
        self.models = models
        self.events_maxlen = events_maxlen
        self.webhook_events_maxlen = webhook_events_maxlen
        self.calibration = Calibration(r, keys)
        self._mark = scripts.register(r, __name__, "mark_plan")
        self._spreads: dict[str, float] = {}
        self._spreads_at = -math.inf
        # model -> (monotonic s, busy s ever, results ever, replicas) at the last tick
        self._busy_seen: dict[str, tuple[float, float, int, int]] = {}
        self._utilization: dict[str, list[float]] = {}  # model -> decayed [busy s, replica s]
        self._full_cost: dict[str, list[float]] = {}  # model -> decayed [busy s, results] of full ticks
        self._backlogged: set[str] = set()  # models whose last plan had work enough to fill every replica

    async def tick(self, now_ms: int, queues: dict[str, ModelQueue]) -> PlanTick:
        names = list(self.models.models)
        jobs = await self._jobs()
        fleets = await self._fleets(queues)
        speeds, totals = await self.calibration.speeds(names)
        backlogged = self._full(jobs, fleets)
        await self._measure_when_full(speeds, totals, fleets, backlogged)
        self._backlogged = backlogged
        await self._read_spreads(names)
        spills = self._spills(now_ms, jobs, fleets, speeds)
        by_id = {j.job_id: j for j in jobs}
        for s in spills:  # planned as moved: what the own fleet keeps, and where the rest goes
            job = by_id[s.job_id]
            job.own[s.model] -= s.requests
            chain = self.models.models[s.model].fallback
            job.away[chain[0]] = job.away.get(chain[0], 0) + s.requests
        model_plans = self._plans(now_ms, jobs, fleets, speeds, queues)
        fired = await self._mark_jobs(now_ms, jobs, model_plans)
        await plans.publish(self.r, self.keys, model_plans.values())
        return PlanTick(plans=model_plans, spills=spills, fired=fired)

    async def _jobs(self) -> list[_Job]:
        k = self.keys
        ids = [j.decode() for j in await self.r.zrange(k.deadlines, 0, MAX_JOBS - 1)]
        if not ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(k.job(job_id), _HEAD)
            heads = await pipe.execute()
        found: list[tuple[str, list, list[str], list[str]]] = []
        for job_id, row in zip(ids, heads):
            if row[1] is None:
                continue
            named = [m for m in json.loads(row[5] or b"[]") if m in self.models.models]
            routes = [m for m in json.loads(row[6] or b"[]") if m in self.models.models and m not in named]
            found.append((job_id, row, named, routes))
        async with self.r.pipeline(transaction=False) as pipe:
            for job_id, _, named, routes in found:
                fields = [model_field(m, f) for m in named for f in ("total", *FINAL_REQUEST_STATES, MOVED)]
                fields += [model_field(m, UsageField.SERVED) for m in routes]
                pipe.hmget(k.job(job_id), fields or [JobField.ID])
            rows = await pipe.execute()
        out = []
        for (job_id, head, named, routes), row in zip(found, rows):
            out.append(self._job(job_id, head, named, routes, [int(v or 0) for v in row]))
        return out

    def _job(self, job_id: str, head: list, named: list[str], routes: list[str], nums: list[int]) -> _Job:
        def num(v) -> int:
            return int(v or 0)

        total = num(head[7])
        finals = [num(v) for v in head[8 : 8 + len(FINAL_REQUEST_STATES)]]
        running = num(head[8 + len(FINAL_REQUEST_STATES)])
        succeeded, failed, cancelled, expired = finals
        counts = RequestCounts(
            total=total,
            queued=max(0, total - running - sum(finals)),
            running=running,
            succeeded=succeeded,
            failed=failed,
            cancelled=cancelled,
            expired=expired,
        )
        job = _Job(
            job_id=job_id,
            lane=(head[2] or b"batch").decode(),
            deadline_ms=num(head[3]),
            on_risk=(head[4] or b"best_effort").decode(),
            counts=counts,
        )
        width = 2 + len(FINAL_REQUEST_STATES)
        per = {m: nums[i * width : (i + 1) * width] for i, m in enumerate(named)}
        served_elsewhere = sum(nums[len(named) * width :])
        moved_all = sum(v[-1] for v in per.values())
        for m, v in per.items():
            m_total, m_done, moved = v[0], sum(v[1:-1]), v[-1]
            moved_done = min(moved, served_elsewhere * moved // moved_all) if moved_all else 0
            job.own[m] = max(0, m_total - m_done - moved + moved_done)
            chain = self.models.models[m].fallback
            if moved - moved_done > 0 and chain:
                job.away[chain[0]] = job.away.get(chain[0], 0) + moved - moved_done
        return job

    async def _fleets(self, queues: dict[str, ModelQueue]) -> dict[str, Fleet]:
        cfgs = list(self.models.models.values())
        async with self.r.pipeline(transaction=False) as pipe:
            for cfg in cfgs:
                pipe.hmget(self.keys.scaling_state(cfg.name), ["current", "desired"])
            states = await pipe.execute()
        starts = await read_start_phases(self.r, self.keys)
        out: dict[str, Fleet] = {}
        for cfg, (current, desired) in zip(cfgs, states):
            q = queues.get(cfg.name)
            consumers = q.consumers if q is not None else 0
            if cfg.scaling.backend == "static":
                out[cfg.name] = Fleet(current=consumers, desired=consumers, most=consumers, boot_s=0.0)
                continue
            now = int(current or 0)
            start = starts.get(cfg.name)
            out[cfg.name] = Fleet(
                current=now,
                desired=int(desired or now),
                most=cfg.scaling.max_replicas,
                boot_s=start.boot_s if start is not None else DEFAULT_BOOT_S,
            )
        return out

    async def _measure_when_full(
        self, speeds: dict[str, Speed], totals: dict[str, tuple[float, int]], fleets: dict[str, Fleet], full: set[str]
    ) -> None:
        """Over the ticks in which a model had work for every slot of every replica at both ends,
        on the same replicas: busy seconds per replica-second (its utilization) and busy seconds
        per result (what a request costs in a full worker: results of a draining worker share its
        time among fewer, and would make a large job look dearer than it is). Decayed sums of both,
        so a long interval weighs more than a short one and one odd second does not swing them;
        kept in Redis, and applied to the speeds."""
        now = time.monotonic()
        measured: dict[str, dict[str, float]] = {}
        for name, speed in speeds.items():
            replicas = fleets[name].current
            busy, count = totals[name]
            seen = self._busy_seen.get(name)
            self._busy_seen[name] = (now, busy, count, replicas)
            util = self._utilization.get(name)
            if util is None:  # what was kept, as if measured over UTILIZATION_PRIOR_S
                util = self._utilization[name] = [speed.utilization * UTILIZATION_PRIOR_S, UTILIZATION_PRIOR_S]
            cost = self._full_cost.get(name)
            if cost is None and speed.full_request_s is not None:
                cost = self._full_cost[name] = [speed.full_request_s * FULL_COST_PRIOR, FULL_COST_PRIOR]
            both = name in full and name in self._backlogged
            if seen is not None and both and replicas > 0 and seen[3] == replicas and now - seen[0] > 0.2:
                util[0] = util[0] * UTILIZATION_KEEP + max(0.0, busy - seen[1])
                util[1] = util[1] * UTILIZATION_KEEP + replicas * (now - seen[0])
                if count > seen[2]:
                    cost = self._full_cost.setdefault(name, [0.0, 0.0])
                    cost[0] = cost[0] * UTILIZATION_KEEP + max(0.0, busy - seen[1])
                    cost[1] = cost[1] * UTILIZATION_KEEP + (count - seen[2])
                measured[name] = {UTILIZATION: min(1.0, util[0] / util[1])}
                if cost is not None and cost[1] > 0:
                    measured[name][FULL_REQUEST_S] = cost[0] / cost[1]
            speed.utilization = min(1.0, util[0] / util[1])
            if cost is not None and cost[1] > 0:
                speed.at_full(cost[0] / cost[1])
        await self.calibration.save(measured)

    async def _read_spreads(self, names: list[str]) -> None:
        now = time.monotonic()
        if now - self._spreads_at < SPREAD_EVERY_S:
            return
        errors = await accuracy.read(self.r, self.keys, names)
        self._spreads = {m: accuracy.spread(errors.get(m)) for m in names}
        self._spreads_at = now

    def _full(self, jobs: list[_Job], fleets: dict[str, Fleet]) -> set[str]:
        """The models with unfinished work enough to fill every slot of every replica several times."""
        left: dict[str, int] = {}
        for j in jobs:
            for model, n in (*j.own.items(), *j.away.items()):
                left[model] = left.get(model, 0) + n
        return {
            name
            for name, n in left.items()
            if n >= FULL_TIMES * max(1, fleets[name].current) * (self.models.models[name].max_inflight or 1)
        }

    def _work(self, jobs: list[_Job], model: str) -> list[QueuedWork]:
        out = []
        for j in jobs:
            n = j.own.get(model, 0) + j.away.get(model, 0)
            if n > 0:
                out.append(QueuedWork(j.job_id, j.lane, j.deadline_ms, n))
        return out

    def _spills(self, now_ms: int, jobs: list[_Job], fleets: dict[str, Fleet], speeds: dict[str, Speed]) -> list[Spill]:
        """For each `spill` job with a deadline: its requests on a model with a chain beyond what
        that model's fleet at max_replicas serves before the deadline (p90)."""
        out: list[Spill] = []
        backlogs: dict[str, Backlog] = {}
        for j in jobs:
            if j.on_risk != "spill" or not j.deadline_ms:
                continue
            for model, n in j.own.items():
                cfg = self.models.models[model]
                speed, fleet = speeds[model], fleets[model]
                per_s = speed.mean_replica_s
                if n <= 0 or not cfg.fallback or speed.calibrated_from == 0 or per_s <= 0:
                    continue
                if model not in backlogs:
                    backlogs[model] = Backlog(self._work(jobs, model), per_s)
                keeps = self._fits(now_ms, j, model, n, backlogs[model], fleet, per_s)
                if keeps < n:
                    out.append(Spill(model=model, job_id=j.job_id, lane=j.lane, requests=n - keeps))
        return out

    def _fits(self, now_ms: int, j: _Job, model: str, n: int, backlog: Backlog, fleet: Fleet, per_s: float) -> int:
        """How many of the job's `n` requests on `model` its fleet finishes before the deadline."""
        spread = self._spreads.get(model, plans.DEFAULT_SPREAD)
        within = (j.deadline_ms - now_ms) / 1000 / (1 + spread)
        room = work_within(within, fleet.current, fleet.most, fleet.boot_s)
        lo, hi = 0, n  # the most requests whose work, with what is ahead of them, fits in `room`
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if backlog.before(QueuedWork(j.job_id, j.lane, j.deadline_ms, mid), mid * per_s) <= room:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _plans(
        self,
        now_ms: int,
        jobs: list[_Job],
        fleets: dict[str, Fleet],
        speeds: dict[str, Speed],
        queues: dict[str, ModelQueue],
    ) -> dict[str, ModelPlan]:
        out: dict[str, ModelPlan] = {}
        for name, cfg in self.models.models.items():
            fleet, speed = fleets[name], speeds[name]
            work = self._work(jobs, name)
            spread = self._spreads.get(name, plans.DEFAULT_SPREAD)
            q = queues.get(name)
            out[name] = ModelPlan(
                model=name,
                at_ms=now_ms,
                replicas=fleet.current,
                desired=fleet.desired,
                max_replicas=fleet.most,
                boot_s=fleet.boot_s,
                speed=speed,
                spread=spread,
                deadline_replicas=_deadline_replicas(now_ms, work, fleet, speed, spread, cfg),
                in_flight=(q.routed_unread + q.pending) if q is not None else 0,
                work=work,
            )
        return out

    async def _mark_jobs(self, now_ms: int, jobs: list[_Job], model_plans: dict[str, ModelPlan]) -> int:
        if not jobs:
            return 0
        ops: list[list] = []
        job_keys: list[str] = [self.keys.events_stream, self.keys.webhook_events]
        now_iso = rfc3339_ms(now_ms)
        etas = job_etas(now_ms, model_plans)
        for j in jobs:
            eta, p90 = etas.get(j.job_id, (None, None))
            at_risk = 0
            doc = b""
            if j.deadline_ms and eta is not None:
                if p90 is not None and p90 > j.deadline_ms:
                    at_risk = 1
                    risk = DeadlineRisk(
                        id=j.job_id,
                        deadline=j.deadline_ms // 1000,
                        estimated_completion_at=math.ceil(eta / 1000),
                        on_deadline_risk=j.on_risk,  # type: ignore[arg-type]
                        request_counts=j.counts,
                        job_url=f"/v1/jobs/{j.job_id}",
                    )
                    doc = deadline_risk_json(risk, now_iso)
            ops.append([eta or 0, at_risk, luapack.lua_bytes(doc)])
            job_keys.append(self.keys.job(j.job_id))
        args: list[EncodableT] = [
            now_ms,
            self.events_maxlen,
            EVENT_FIELD,
            self.webhook_events_maxlen,
            luapack.pack(ops),
        ]
        fired = int(await self._mark(keys=job_keys, args=args))
        if fired:
            log.warning("%d job deadline(s) now at risk", fired)
        return fired


def _deadline_replicas(
    now_ms: int, work: list[QueuedWork], fleet: Fleet, speed: Speed, spread: float, cfg: ModelConfig
) -> int:
    """The fewest replicas that finish every deadline job on the model by its deadline (p90);
    its max_replicas when some cannot be met at all."""
    per_s = speed.mean_replica_s
    if speed.calibrated_from == 0 or per_s <= 0 or cfg.scaling.backend == "static":
        return 0
    backlog = Backlog(work, per_s)
    need = 0
    for w in work:
        if not w.deadline_ms:
            continue
        within = (w.deadline_ms - now_ms) / 1000
        total = backlog.before(w, w.requests * per_s) * (1 + spread)
        n = replicas_for(total, within, fleet.current, fleet.boot_s, fleet.most) if within > 0 else None
        need = max(need, fleet.most if n is None else n)
    return need


def job_etas(now_ms: int, model_plans: dict[str, ModelPlan]) -> dict[str, tuple[int | None, int | None]]:
    """When the plans say each job's last request finishes (ms, p50 and p90): the latest of its
    models. None when a model it waits for has nothing measured, or no replica to come."""
    out: dict[str, tuple[int | None, int | None]] = {}
    for plan in model_plans.values():
        timing = PlanTiming(plan)
        for w in plan.work:
            t = timing.finish_s(w)
            p50, p90 = out.get(w.job_id, (now_ms, now_ms))
            if t is None or p50 is None or p90 is None:
                out[w.job_id] = (None, None)
                continue
            out[w.job_id] = (max(p50, now_ms + round(t * 1000)), max(p90, now_ms + round(t * (1 + plan.spread) * 1000)))
    return out
