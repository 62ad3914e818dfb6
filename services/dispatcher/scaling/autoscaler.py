"""The autoscaling loop: every half second, per model, backlog → policy → backend, with the state
and every change recorded in Redis for `GET /v1/models` and the scaling-events stream.

The planner's deadline replicas (shared/planning/plan.py) are a floor: a model with deadline work
waiting gets at least what its deadlines need, within max_replicas.

Backlog is the model's accepted-but-unfinished count (staged in the router + unread in its streams
+ delivered and unacknowledged, both lanes): with flow control the streams themselves never hold
more than the high watermark, so counting only them would cap the replica count.

One dispatcher at a time scales (a leader lease in Redis), so two dispatchers never fight. The
lease is renewed while a tick runs, not only at its start, so a slow backend call (Modal) cannot
outlast it and let another dispatcher start the same replicas; a tick that finds the lease lost
stops where it is. Each backend call has a timeout, so one hung model does not stall the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import redis.asyncio as aioredis

from services.dispatcher.scaling.lead import Lead
from services.dispatcher.scaling.policy import Decision, ScalePolicy
from shared.catalog.models import ModelsConfig
from shared.catalog.spend import LimitStatus, read_reached
from shared.core.errors import REDIS_UNAVAILABLE, TRANSIENT_REDIS_ERRORS
from shared.models.flow import model_queues
from shared.models.start_phases import read_all as read_start_phases
from shared.planning import plan as plans
from shared.planning.plan import PLAN_STALE_S
from shared.redis.keys import Keys
from shared.redis.outage import OUTAGE
from shared.redis.streams import consumer_name

log = logging.getLogger("inferq.scaling")
EVENTS_MAXLEN = 10_000


class Autoscaler:
    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        models: ModelsConfig,
        backends: dict,
        *,
        interval_s: float = 0.5,
        clock=time.monotonic,
        lease_s: float | None = None,
        call_timeout_s: float = 10.0,
    ) -> None:
        self.r = r
        self.keys = keys
        self.backends = backends  # backend name -> backend
        self.models = {name: cfg for name, cfg in models.models.items() if cfg.scaling.backend in backends}
        self.policies = {name: ScalePolicy(cfg.scaling) for name, cfg in self.models.items()}
        self.interval_s = interval_s
        self.lease_s = lease_s if lease_s is not None else max(3.0, interval_s * 6)
        self.call_timeout_s = call_timeout_s
        self.clock = clock
        self.me = consumer_name("scaler")
        self._lead = Lead(r)
        self.leading = False

    async def run(self, stop: asyncio.Event) -> None:
        if not self.models:
            return
        while not stop.is_set():
            try:
                await self.tick()
                OUTAGE.recovered("autoscaler")
            except TRANSIENT_REDIS_ERRORS as exc:  # logged once per outage, by shared/redis/outage.py
                OUTAGE.failed("autoscaler", exc)
            except Exception:  # a backend failure (Modal API down) must not stop scaling other models
                log.exception("autoscaler tick failed")
            try:
                await asyncio.wait_for(stop.wait(), self.interval_s)
            except TimeoutError:
                pass

    async def tick(self) -> None:
        if not await self._renew():
            return
        work = asyncio.create_task(self._scale_all())
        keeper = asyncio.create_task(self._keep_lease(work))
        try:
            await work
        except asyncio.CancelledError:
            if self.leading:  # cancelled from outside, not by a lost lease
                raise
            log.warning("autoscaler: lost the scaling lease during a tick; stopped it there")
        finally:
            keeper.cancel()

    async def _renew(self) -> bool:
        """Take the lease if free, renew it if ours; whether we lead."""
        lease_ms = int(self.lease_s * 1000)
        self.leading = await self._lead(lease=self.keys.scaler_leader, holder=self.me, lease_ms=lease_ms)
        return self.leading

    async def _keep_lease(self, work: asyncio.Task) -> None:
        """Renew every third of the lease while `work` runs; cancel it once we may no longer lead."""
        while not work.done():
            await asyncio.sleep(self.lease_s / 3)
            try:
                leading = await self._renew()
            except TRANSIENT_REDIS_ERRORS as exc:
                log.warning("autoscaler: cannot renew the scaling lease (%s)", exc)
                self.leading = leading = False  # cannot prove we lead: stop before another may
            if not leading:
                work.cancel()
                return

    async def _scale_all(self) -> None:
        names = list(self.models)
        queues = await model_queues(self.r, self.keys, list(self.models.values()))
        reached = await read_reached(self.r, self.keys)
        starts = await read_start_phases(self.r, self.keys)
        planned = await plans.read(self.r, self.keys, names)
        now = self.clock()
        for name in names:
            if name in starts:  # replicas start this far ahead of a growing backlog
                self.policies[name].boot_s = starts[name].boot_s
            q = queues[name][0]
            # what waits for or runs on this model now, requests moved here from another included;
            # at least what was accepted for it and is unfinished, so a large job's requests that
            # are still on their way through the ingest stream count from the first tick (its first
            # requests reach the lane stream at creation: counting only those scaled in two steps)
            backlog = max(q.queued + q.routed_unread + q.pending, q.unfinished)
            plan = planned.get(name)
            fresh = plan is not None and time.time() * 1000 - plan.at_ms < PLAN_STALE_S * 1000
            deadlines = plan.deadline_replicas if plan is not None and fresh else 0
            try:
                await self._scale_one(name, backlog, now, _model_limit(reached, name), deadlines)
            except TimeoutError:
                log.warning(
                    "autoscaler: %s backend gave no answer within %gs",
                    self.models[name].scaling.backend,
                    self.call_timeout_s,
                    extra={"model": name},
                )
            except REDIS_UNAVAILABLE:
                raise
            except Exception:  # a backend failure (Modal API down) must not stop scaling the other models
                log.exception("autoscaler: scaling failed", extra={"model": name})

    async def _scale_one(
        self, name: str, backlog: int, now: float, spent: LimitStatus | None = None, deadlines: int = 0
    ) -> None:
        cfg = self.models[name]
        backend = self.backends[cfg.scaling.backend]
        current = await asyncio.wait_for(backend.replicas(name), self.call_timeout_s)
        decision = self.policies[name].decide(now, backlog, current, deadlines)
        if spent is not None and decision.desired > current:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(spent.resets_at))
            decision = Decision(current, f"spend limit {spent.limit.name} reached: no new replicas until {when}")
        state = {
            "backend": backend.name,
            "desired": decision.desired,
            "backlog": backlog,
            "reason": decision.reason,
            "decided_ms": int(time.time() * 1000),
        }
        reached = current
        if decision.desired != current:
            # what the backend reached: less than asked while its starts fail and back off
            reached = await asyncio.wait_for(backend.scale(name, decision.desired), self.call_timeout_s)
        if reached != current:
            event = {
                "model": name,
                "backend": backend.name,
                "from": current,
                "to": reached,
                "backlog": backlog,
                "reason": decision.reason,
                "at": time.time(),
            }
            await self.r.xadd(
                self.keys.scaling_events, {"event": json.dumps(event)}, maxlen=EVENTS_MAXLEN, approximate=True
            )
            log.info(
                "scaled %s from %d to %d: %s",
                name,
                current,
                reached,
                decision.reason,
                extra={"model": name, "backlog": backlog},
            )
            state.update(
                change_from=current, change_to=reached, change_reason=decision.reason, change_ms=state["decided_ms"]
            )
        state["current"] = reached
        await self.r.hset(self.keys.scaling_state(name), mapping=state)  # type: ignore[misc]


def _model_limit(reached: list[LimitStatus], model: str) -> LimitStatus | None:
    """A reached limit on the model itself (every tenant's spend): replicas started now would be
    paid for work that is refused or moved elsewhere."""
    return next((s for s in reached if s.limit.tenant is None and model in s.limit.models), None)
