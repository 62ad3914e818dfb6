"""Prometheus metrics. Counters and histograms are counted where things happen (each process
serves its own); queue depths and replicas are read from Redis when scraped, so any process can
report them and they are never stale.

Names: inferq_backlog{model,lane,state} (state: staged | routed_unread | in_flight),
inferq_unfinished{model}, inferq_replicas{model} / inferq_replicas_desired{model},
inferq_routed_total, inferq_routed_at_creation_total, inferq_results_applied_total,
inferq_request_queue_wait_seconds{model},
inferq_request_inference_seconds{model}, inferq_tokens_total{model,kind},
inferq_results_total{model,status}, inferq_webhook_deliveries_total{outcome},
inferq_http_requests_total{method,route,status}, inferq_http_request_duration_seconds{method,route},
inferq_requests_accepted_total; retention: inferq_dead_letters (kept), inferq_dead_letters_dropped_total,
inferq_webhook_events_lag (events the webhook fan-out has not acknowledged),
inferq_webhook_events_dropped_total (refused at the webhook events stream's bound); fallback,
health and spend: shared/ops/fallback_metrics.py."""

from __future__ import annotations

from bisect import bisect_left

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from shared.catalog.models import ModelsConfig
from shared.core.states import RequestStatus
from shared.models.flow import model_queue, model_scaling
from shared.ops.fallback_metrics import FallbackFigures
from shared.redis.keys import LANES, WEBHOOK_GROUP, Keys
from shared.redis.streams import unacknowledged

REGISTRY = CollectorRegistry()
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

BACKLOG = Gauge(
    "inferq_backlog", "Requests of a model and lane by where they wait", ["model", "lane", "state"], registry=REGISTRY
)
UNFINISHED = Gauge(
    "inferq_unfinished", "Accepted requests of a model without a result yet", ["model"], registry=REGISTRY
)
START_PHASE = Gauge(
    "inferq_worker_start_seconds",
    "Seconds from this worker's process start (or snapshot restore) to each start phase",
    ["model", "phase"],
    registry=REGISTRY,
)
REPLICAS = Gauge("inferq_replicas", "Worker replicas running, per the autoscaler", ["model"], registry=REGISTRY)
REPLICAS_DESIRED = Gauge(
    "inferq_replicas_desired", "Worker replicas the autoscaler wants", ["model"], registry=REGISTRY
)
WEBHOOK_DELIVERIES = Counter("inferq_webhook_deliveries", "Webhook attempts by outcome", ["outcome"], registry=REGISTRY)
HTTP_REQUESTS = Counter(
    "inferq_http_requests", "HTTP requests served", ["method", "route", "status"], registry=REGISTRY
)
HTTP_DURATION = Histogram(
    "inferq_http_request_duration_seconds",
    "HTTP request handling time",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
REQUESTS_ACCEPTED = Counter("inferq_requests_accepted", "Requests accepted in jobs", registry=REGISTRY)
ROUTED_AT_CREATION = Counter(
    "inferq_routed_at_creation",
    "Requests a job's creation wrote straight to their lane streams (the router routes the rest)",
    registry=REGISTRY,
)


class _Buckets:
    """A histogram's state as plain numbers: one bisect and two additions per observation, with
    no lock (one event loop writes it), where prometheus_client's Histogram costs a few µs."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(_LATENCY_BUCKETS, value)] += 1
        self.total += value

    def family_sample(self) -> tuple[list[tuple[str, int]], float]:
        cumulative, running = [], 0
        for bound, n in zip((*map(str, _LATENCY_BUCKETS), "+Inf"), self.counts):
            running += n
            cumulative.append((bound, running))
        return cumulative, self.total


class WorkerStats:
    """What a worker counts per request (queue wait, inference time, tokens, results) on its hot
    path, exposed as inferq_request_queue_wait_seconds, inferq_request_inference_seconds,
    inferq_tokens_total and inferq_results_total when scraped."""

    def __init__(self) -> None:
        self.wait = _Buckets()
        self.inference = _Buckets()
        self.prompt_tokens = self.completion_tokens = self.succeeded = self.failed = 0

    def record(
        self, wait_s: float, inference_s: float, prompt_tokens: int, completion_tokens: int, failed: bool
    ) -> None:
        self.wait.observe(wait_s)
        self.inference.observe(inference_s)
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if failed:
            self.failed += 1
        else:
            self.succeeded += 1


class _WorkerCollector:
    def __init__(self) -> None:
        self.models: dict[str, WorkerStats] = {}
        REGISTRY.register(self)

    def collect(self):
        wait = HistogramMetricFamily(
            "inferq_request_queue_wait_seconds", "Acceptance to the start of inference", labels=["model"]
        )
        inference = HistogramMetricFamily(
            "inferq_request_inference_seconds", "Time in the engine, retries included", labels=["model"]
        )
        tokens = CounterMetricFamily("inferq_tokens", "Tokens processed", labels=["model", "kind"])
        results = CounterMetricFamily("inferq_results", "Requests finished by a worker", labels=["model", "status"])
        for model, st in self.models.items():
            wait.add_metric([model], *st.wait.family_sample())
            inference.add_metric([model], *st.inference.family_sample())
            tokens.add_metric([model, "prompt"], st.prompt_tokens)
            tokens.add_metric([model, "completion"], st.completion_tokens)
            results.add_metric([model, RequestStatus.SUCCEEDED.value], st.succeeded)
            results.add_metric([model, RequestStatus.FAILED.value], st.failed)
        yield from (wait, inference, tokens, results)


_WORKERS = _WorkerCollector()


def worker_stats(model: str) -> WorkerStats:
    """One per model and process: workers that restart in a container keep counting on."""
    return _WORKERS.models.setdefault(model, WorkerStats())


class DispatcherCounters:
    """Exposes the router's and collector's own running totals (no per-message metric calls on
    the hot path); `source` is swapped when the dispatcher restarts its consumers."""

    def __init__(self) -> None:
        self.source: dict = {}
        REGISTRY.register(self)

    def collect(self):
        routed = CounterMetricFamily("inferq_routed", "Requests moved to model streams")
        applied = CounterMetricFamily("inferq_results_applied", "Results recorded on jobs")
        router, collector = self.source.get("router"), self.source.get("collector")
        routed.add_metric([], router.routed if router else 0)
        applied.add_metric([], collector.applied if collector else 0)
        yield routed
        yield applied
        # each event sink this dispatcher delivered to (GET /v1/sinks has the totals over all of them)
        sinks = self.source.get("sinks", [])
        families = {
            name: CounterMetricFamily(f"inferq_sink_events_{name}", text, labels=["sink"])
            for name, text in (
                ("delivered", "Events an event sink acknowledged"),
                ("rejected", "Events an event sink's receiver refused as malformed (skipped)"),
                ("lost", "Events trimmed from the events stream before an event sink read them"),
            )
        }
        failing = GaugeMetricFamily(
            "inferq_sink_failing", "1 while an event sink cannot hand its events over", labels=["sink"]
        )
        for sink in sinks:
            for name, family in families.items():
                family.add_metric([sink.name], getattr(sink, name))
            failing.add_metric([sink.name], 1 if sink.failing else 0)
        if sinks:
            yield from families.values()
            yield failing


class Retention:
    """What retention keeps and drops, read from Redis (the dropping scripts count there, so every
    process reports the same totals); shown only by processes that read it (ingest, dispatcher)."""

    def __init__(self) -> None:
        self.read = False
        self.dead_letters = self.dead_letters_dropped = 0
        self.webhook_events_lag = self.webhook_events_dropped = 0
        REGISTRY.register(self)

    def collect(self):
        if not self.read:
            return
        kept = GaugeMetricFamily("inferq_dead_letters", "Dead letters kept")
        kept.add_metric([], self.dead_letters)
        dead = CounterMetricFamily("inferq_dead_letters_dropped", "Dead letters dropped by retention (age or count)")
        dead.add_metric([], self.dead_letters_dropped)
        lag = GaugeMetricFamily("inferq_webhook_events_lag", "Webhook events not yet acknowledged by the fan-out")
        lag.add_metric([], self.webhook_events_lag)
        hooks = CounterMetricFamily(
            "inferq_webhook_events_dropped", "Webhook events refused because the fan-out's stream was at its bound"
        )
        hooks.add_metric([], self.webhook_events_dropped)
        yield from (kept, dead, lag, hooks)


RETENTION = Retention()
FALLBACK = FallbackFigures(REGISTRY)


async def refresh_retention_gauges(r: aioredis.Redis, keys: Keys) -> None:
    """Dead letters kept and dropped, the webhook fan-out's lag and refused events, from Redis."""
    async with r.pipeline(transaction=False) as pipe:
        pipe.xlen(keys.dead_letter_stream)
        pipe.get(keys.dead_letters_dropped)
        pipe.get(keys.webhook_events_dropped)
        kept, dead_dropped, hooks_dropped = await pipe.execute()
    RETENTION.webhook_events_lag = await unacknowledged(r, keys.webhook_events, WEBHOOK_GROUP)
    RETENTION.dead_letters = int(kept)
    RETENTION.dead_letters_dropped = int(dead_dropped or 0)
    RETENTION.webhook_events_dropped = int(hooks_dropped or 0)
    RETENTION.read = True


async def refresh_queue_gauges(r: aioredis.Redis, keys: Keys, models: ModelsConfig) -> None:
    """Read backlog and replicas of every model, and the retention figures, from Redis into the
    gauges (before a scrape)."""
    for name in models.names():
        cfg = models.models[name]
        queue = await model_queue(r, keys, cfg)
        for lane in LANES:
            q = queue.lanes[lane]
            BACKLOG.labels(name, lane, "staged").set(q.queued)
            BACKLOG.labels(name, lane, "routed_unread").set(q.routed_unread)
            BACKLOG.labels(name, lane, "in_flight").set(q.pending)
        UNFINISHED.labels(name).set(queue.unfinished)
        scaling = await model_scaling(r, keys, cfg)
        REPLICAS.labels(name).set(scaling.current if scaling.current is not None else queue.consumers)
        REPLICAS_DESIRED.labels(name).set(scaling.desired if scaling.desired is not None else queue.consumers)
    await refresh_retention_gauges(r, keys)
    await FALLBACK.refresh(r, keys, models)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
