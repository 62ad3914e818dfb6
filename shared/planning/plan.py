"""A model's plan, as the dispatcher's planner publishes it each second: the work queued for it,
its fleet, and its measured speed. The ingest's quotes read it (one HMGET), so a quote costs no
scan of the jobs; the autoscaler reads the replicas its deadlines need.

Speed is measured, not configured: a request's charged busy time (services/inference/busy_clock.py)
is fitted per model as `busy_base_s + busy_per_token_s * completion_tokens` on the model's recent
results; that is its cost (busy time at the model's price). Its time is the same busy time over
the replicas and their measured utilization (busy seconds per replica-second while work waited).
Tokens per character and per max_tokens are measured on the results too.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import redis.asyncio as aioredis
from msgspec import Struct

from shared.planning.schedule import QueuedWork
from shared.redis.keys import Keys

DEFAULT_CHARS_PER_TOKEN = 4.0  # before a model has finished anything: the usual English ratio
DEFAULT_SPREAD = 0.25  # p90 over p50 of a duration, before quote errors were measured
MIN_SPREAD = 0.1
PLAN_STALE_S = 10.0  # a plan older than this is from a dispatcher that stopped


class Speed(Struct, kw_only=True):
    """A model's measured cost per request, in busy seconds, and its tokens."""

    busy_base_s: float = 0.0
    busy_per_token_s: float = 0.0
    calibrated_from: int = 0  # results measured, ever; 0: nothing yet (the fit weighs the latest most)
    chars_per_token: float | None = None  # prompt characters per prompt token
    completion_ratio: float | None = None  # completion tokens / max_tokens
    mean_completion_tokens: float | None = None
    # busy seconds a replica is charged per second while work waits for it (measured by the
    # planner): below 1 when something before the engine (feeding, reads, publishing) leaves
    # its slots idle at times, so a job's wall time is its busy time / (replicas * utilization)
    utilization: float = 1.0
    # what the model's results were billed, per request (each rounded to the micro-dollar), and
    # the busy seconds and tokens it was billed for: quotes bill the same way
    billed_micros: float = 0.0
    billed_busy_s: float = 0.0
    billed_tokens: float = 0.0
    # busy seconds per result while every slot of every replica had work (measured by the planner):
    # what the line is scaled to, since a draining worker's last results share its time among few
    full_request_s: float | None = None

    def at_full(self, per_request_s: float) -> None:
        """Scale the line so that a request of the mean completion costs `per_request_s`."""
        mean = self.mean_request_s
        if mean > 0 and per_request_s > 0:
            self.busy_base_s *= per_request_s / mean
            self.busy_per_token_s *= per_request_s / mean
        self.full_request_s = per_request_s

    def request_s(self, completion_tokens: float) -> float:
        """Busy seconds one request is charged (what its cost is made of)."""
        return self.busy_base_s + self.busy_per_token_s * completion_tokens

    @property
    def mean_request_s(self) -> float:
        return self.request_s(self.mean_completion_tokens or 0.0)

    def replica_s(self, busy_s: float) -> float:
        """The replica seconds `busy_s` busy seconds take (what time is made of)."""
        return busy_s / max(self.utilization, 0.05)

    @property
    def mean_replica_s(self) -> float:
        """Replica seconds per request, at the mean completion."""
        return self.replica_s(self.mean_request_s)


class ModelPlan(Struct, kw_only=True):
    model: str
    at_ms: int
    replicas: int  # serving now
    desired: int  # what the autoscaler (or the fleet) aims at now
    max_replicas: int  # what it may reach (a static fleet: the replicas now)
    boot_s: float  # a new replica's start, measured (0 for a static fleet: nothing is started)
    speed: Speed
    spread: float = DEFAULT_SPREAD  # p90 finish error, measured on finished jobs
    deadline_replicas: int = 0  # what the deadlines waiting for it need (p90), within max_replicas
    in_flight: int = 0  # entries routed to its streams and not yet done (ahead of everything staged)
    work: list[QueuedWork] = []  # unfinished jobs' requests on the model


_decoder = msgspec.json.Decoder(ModelPlan)
_encoder = msgspec.json.Encoder()


async def publish(r: aioredis.Redis, keys: Keys, plans: Iterable[ModelPlan]) -> None:
    mapping = {p.model: _encoder.encode(p) for p in plans}
    if mapping:
        await r.hset(keys.plans, mapping=mapping)  # type: ignore[misc]


async def read(r: aioredis.Redis, keys: Keys, models: list[str]) -> dict[str, ModelPlan]:
    """The published plans of `models` (those never published are missing)."""
    if not models:
        return {}
    raw = await r.hmget(keys.plans, models)  # type: ignore[misc]
    out: dict[str, ModelPlan] = {}
    for model, value in zip(models, raw):
        if value:
            try:
                out[model] = _decoder.decode(value)
            except msgspec.DecodeError:  # written by another version: as if none
                continue
    return out
