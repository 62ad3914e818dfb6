"""Quotes: what a job would take and cost if submitted now, from its models' published plans
(shared/planning/plan.py: the work queued for each model, its replicas and measured speed).

Per model: prompt tokens (its tokenizer, else characters at its measured characters per token),
completion tokens (max_tokens at the share its results used), busy seconds (the model's fitted
busy time per request at those completion tokens), cost (busy time and tokens at its prices), and
when the job's share starts and finishes among the work queued for the model (the schedule model
of shared/planning/schedule.py) on the replicas it has now and on its max_replicas. The p90 is the
p50 widened by the model's measured quote error. Every accepted job is quoted this way too, and
the quote stored with it, so GET /v1/models can say how wrong the quotes were.
"""

from __future__ import annotations

import logging
import math
import time

import redis.asyncio as aioredis

from services.ingest.errors.client import ApiException
from services.ingest.submission import Demand, JobPlan
from services.ingest.token_counts import TokenCounter
from shared.catalog.models import ModelConfig, ModelsConfig
from shared.catalog.pricing import exact_micros
from shared.core.errors import REDIS_UNAVAILABLE
from shared.planning import plan as plans
from shared.planning.plan import DEFAULT_CHARS_PER_TOKEN, PLAN_STALE_S, ModelPlan, Speed
from shared.planning.schedule import QueuedWork, replicas_for
from shared.planning.timing import PlanTiming
from shared.redis.keys import JobField, Keys
from shared.wire.api import ModelQuote, Quote, Timeline

log = logging.getLogger("inferq.ingest.quotes")
QUOTED = "quote"  # the job id a quoted job stands as in a model's backlog
MOST_REPLICAS = 1000  # how far `replicas_needed` looks past max_replicas


class Quoter:
    def __init__(self, r: aioredis.Redis, keys: Keys, models: ModelsConfig) -> None:
        self.r = r
        self.keys = keys
        self.models = models
        self.tokens = TokenCounter()

    async def quote(self, job: JobPlan) -> Quote:
        now_s = time.time()
        published = await plans.read(self.r, self.keys, sorted(job.demand))
        parts = []
        notes: list[str] = []
        for name, demand in sorted(job.demand.items()):
            cfg = self.models.models[name]
            plan = published.get(name)
            if plan is None or now_s * 1000 - plan.at_ms > PLAN_STALE_S * 1000:
                notes.append(f"model {name!r}: no dispatcher has published its plan lately: nothing is queued ahead")
                plan = _empty_plan(cfg, now_s)
            if plan.speed.calibrated_from == 0:
                notes.append(
                    f"model {name!r}: nothing measured yet: times are unknown until its first results, and the cost"
                    " counts only its tokens"
                )
            parts.append(await self._model_quote(cfg, plan, demand, job, now_s))
        return _whole(parts, job, now_s, notes, self.models)

    async def _model_quote(
        self, cfg: ModelConfig, plan: ModelPlan, d: Demand, job: JobPlan, now_s: float
    ) -> ModelQuote:
        speed = plan.speed
        counted = await self.tokens.count(cfg, d.texts)
        if counted is not None:
            prompt_tokens, prompt_from = counted, "tokenizer"
        elif speed.chars_per_token:
            prompt_tokens, prompt_from = round(d.prompt_chars / speed.chars_per_token), "learned"
        else:
            prompt_tokens, prompt_from = round(d.prompt_chars / DEFAULT_CHARS_PER_TOKEN), "default"
        ratio = speed.completion_ratio
        completion = round(d.max_tokens * (ratio if ratio is not None else 1.0))
        per_request_s = speed.request_s(completion / d.requests)
        busy_s = per_request_s * d.requests if speed.calibrated_from else 0.0
        cost = _billed(cfg, speed, busy_s, prompt_tokens + completion)
        work = QueuedWork(QUOTED, job.priority, job.deadline_ms, d.requests)
        timing = PlanTiming(plan)
        job_s, one_s = speed.replica_s(busy_s), speed.replica_s(per_request_s)  # what time is made of
        first = QueuedWork(QUOTED, job.priority, job.deadline_ms, 1)
        current = max(timing.target, 1 if plan.max_replicas > 0 else 0)
        quote = ModelQuote(
            model=cfg.name,
            requests=d.requests,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            prompt_tokens_from=prompt_from,  # type: ignore[arg-type]
            completion_tokens_from="learned" if ratio is not None else "max_tokens",
            busy_seconds=round(busy_s, 3),
            cost=round(cost / 1e6, 6),
            ahead_requests=_ahead(timing, work, job_s),
            calibrated_from=speed.calibrated_from,
            current=_timeline(timing, work, first, job_s, one_s, current, now_s),
            at_max_replicas=_timeline(timing, work, first, job_s, one_s, plan.max_replicas, now_s),
        )
        if job.deadline_ms and timing.backlog is not None:
            within = job.deadline_ms / 1000 - now_s
            before = timing.backlog.before(work, job_s) * (1 + plan.spread)
            quote.replicas_needed = replicas_for(before, within, plan.replicas, plan.boot_s, MOST_REPLICAS)
        return quote


def _billed(cfg: ModelConfig, speed: Speed, busy_s: float, tokens: int) -> float:
    """Micro-dollars the job will be billed: its busy time and tokens at the model's prices,
    scaled as the model's results were billed against the same prices (each request's charge is
    rounded to the micro-dollar, which matters where a request costs only a few)."""
    exact = exact_micros(cfg, busy_s * 1e6, tokens)
    measured = exact_micros(cfg, speed.billed_busy_s * 1e6, speed.billed_tokens)
    if speed.billed_micros > 0 and measured > 0:
        return exact * speed.billed_micros / measured
    return exact


def _empty_plan(cfg: ModelConfig, now_s: float) -> ModelPlan:
    static = cfg.scaling.backend == "static"
    return ModelPlan(
        model=cfg.name,
        at_ms=int(now_s * 1000),
        replicas=0,
        desired=0,
        max_replicas=0 if static else cfg.scaling.max_replicas,
        boot_s=0.0,
        speed=plans.Speed(),
    )


def _ahead(timing: PlanTiming, work: QueuedWork, job_s: float) -> int:
    """Requests of other jobs the model serves before the job's last one."""
    if timing.backlog is None:
        return 0
    return max(0, round((timing.backlog.before(work, job_s) - job_s) / timing.per_s))


def _timeline(
    timing: PlanTiming,
    work: QueuedWork,
    first: QueuedWork,
    job_s: float,
    one_s: float,
    replicas: int,
    now_s: float,
) -> Timeline | None:
    """When the job's share starts and finishes on `replicas` (its work in replica seconds)."""
    plan = timing.plan
    finish = timing.finish_s(work, job_s, replicas)
    start = timing.finish_s(first, one_s, replicas, extra_s=plan.in_flight * timing.per_s)
    if finish is None or start is None:
        return None
    spread = 1 + plan.spread
    return Timeline(
        replicas=replicas,
        start_at=round(now_s + start, 3),
        start_p90_at=round(now_s + start * spread, 3),
        finish_at=round(now_s + finish, 3),
        finish_p90_at=round(now_s + finish * spread, 3),
    )


def _latest(parts: list[Timeline | None]) -> Timeline | None:
    if not parts or any(p is None for p in parts):
        return None
    known = [p for p in parts if p is not None]
    return Timeline(
        replicas=max(p.replicas for p in known),
        start_at=min(p.start_at for p in known),
        start_p90_at=min(p.start_p90_at for p in known),
        finish_at=max(p.finish_at for p in known),
        finish_p90_at=max(p.finish_p90_at for p in known),
    )


def _whole(parts: list[ModelQuote], job: JobPlan, now_s: float, notes: list[str], models: ModelsConfig) -> Quote:
    at_max = _latest([p.at_max_replicas for p in parts])
    quote = Quote(
        quoted_at=round(now_s, 3),
        requests=sum(p.requests for p in parts),
        prompt_tokens=sum(p.prompt_tokens for p in parts),
        completion_tokens=sum(p.completion_tokens for p in parts),
        cost=round(sum(p.cost for p in parts), 6),
        current=_latest([p.current for p in parts]),
        at_max_replicas=at_max,
        models=parts,
        notes=notes,
    )
    if job.deadline_ms:
        quote.deadline = job.deadline_ms // 1000
        quote.on_deadline_risk = job.on_deadline_risk  # type: ignore[assignment]
        if at_max is not None:
            quote.feasible = at_max.finish_p90_at * 1000 <= job.deadline_ms
            if not quote.feasible:
                quote.suggestions = _suggestions(parts, job, models)
    return quote


def _suggestions(parts: list[ModelQuote], job: JobPlan, models: ModelsConfig) -> list[str]:
    """What would make the deadline hold, per model that misses it: more replicas, a fallback tier."""
    out = []
    for p in parts:
        if p.at_max_replicas is None or p.at_max_replicas.finish_p90_at * 1000 <= job.deadline_ms:
            continue
        chain = models.models[p.model].fallback
        if chain and job.on_deadline_risk != "spill":
            out.append(
                f'model {p.model!r}: on_deadline_risk = "spill" moves what its fleet cannot finish in time down'
                f" its fallback chain ({', '.join(chain)})"
            )
        if p.replicas_needed is not None and p.replicas_needed > p.at_max_replicas.replicas:
            out.append(
                f"model {p.model!r}: {p.replicas_needed} replicas meet the deadline; its scaling.max_replicas is"
                f" {p.at_max_replicas.replicas}"
            )
        elif p.replicas_needed is None:
            out.append(f"model {p.model!r}: no number of replicas meets the deadline: move it later")
    return out


async def quote_for_submission(quoter: Quoter, job: JobPlan) -> dict[str, str]:
    """Quote a job being submitted: the fields its hash keeps of the quote, or a 409 for a `refuse`
    job the quote says is late. A quote that fails for another reason than Redis does not stop a
    submission (it is then not measured), except one that must be refused if late."""
    try:
        quote = await quoter.quote(job)
    except REDIS_UNAVAILABLE:
        raise
    except Exception:
        log.exception("could not quote job %s", job.job_id)
        if job.on_deadline_risk == "refuse":
            raise ApiException(503, "deadline: the job cannot be quoted now; try again", type="unavailable") from None
        return {}
    if job.on_deadline_risk == "refuse" and quote.feasible is False:
        raise refused(quote)
    return quote_fields(quote, job)


def quote_fields(quote: Quote, job: JobPlan) -> dict[str, str]:
    """What the job's hash keeps of its quote (for GET /v1/models' quote errors): nothing when
    the quote had no time."""
    if quote.current is None:
        return {}
    return {
        JobField.QUOTED_END_MS: str(math.ceil(quote.current.finish_at * 1000)),
        JobField.QUOTED_COST_MICROS: str(round(quote.cost * 1e6)),
    }


def refused(quote: Quote) -> ApiException:
    """The 409 of a job whose deadline the quote cannot meet, with on_deadline_risk = refuse."""
    at = quote.at_max_replicas
    when = "an unknown time" if at is None else f"{at.finish_p90_at:.0f} (p90, at max_replicas)"
    exc = ApiException(
        409,
        f"deadline: the plan finishes the job at {when}, after its deadline {quote.deadline}; nothing was written"
        + ("; " + "; ".join(quote.suggestions) if quote.suggestions else ""),
        type="deadline_infeasible",
        field="deadline",
    )
    exc.body.quote = quote
    return exc
