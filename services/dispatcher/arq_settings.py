"""arq WorkerSettings for the dispatcher (`arq services.dispatcher.arq_settings.WorkerSettings` works too).

The router and collector are long-running stream consumers started from the startup hook; arq's
own job queue and cron run the periodic and deferred work.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Sequence

import redis.asyncio as aioredis
from arq import cron
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function

from services.dispatcher.collector import Collector
from services.dispatcher.fallback import FallbackMover, fallback_tick
from services.dispatcher.maintenance import expire_due_jobs, trim_streams
from services.dispatcher.planning.planner import Planner
from services.dispatcher.router import Router
from services.dispatcher.scaling.autoscaler import Autoscaler
from services.dispatcher.scaling.local_backend import LocalBackend
from services.dispatcher.sinks.fleet import sink_runners
from services.dispatcher.stats_sampler import sample_models
from services.dispatcher.stranded import finish_stranded_jobs
from services.dispatcher.webhooks.attempts import LEASE_MARGIN_S, WebhookAttempts
from services.dispatcher.webhooks.delivery import arq_enqueuer, deliver_webhook, schedule_deliveries
from services.dispatcher.webhooks.fanout import WebhookFanout
from services.dispatcher.webhooks.http_client import WebhookHttp
from shared.catalog.models import load_models
from shared.core.errors import TRANSIENT_REDIS_ERRORS
from shared.core.settings import Settings
from shared.jobs.store import JobStore
from shared.lanes.liveness import Liveness
from shared.ops import metrics
from shared.ops.server import serve as serve_ops
from shared.redis.client import connect
from shared.redis.keys import Keys
from shared.redis.outage import OUTAGE
from shared.webhooks.store import WebhookStore

log = logging.getLogger("inferq.dispatcher")
settings = Settings.from_env()


def _planner(r, keys: Keys, models) -> Planner:
    return Planner(
        r, keys, models, events_maxlen=settings.events_maxlen, webhook_events_maxlen=settings.webhook_events_maxlen
    )


async def startup(ctx: dict) -> None:
    keys = Keys(settings.key_prefix)
    models = load_models(settings.models_path)
    r = connect(settings.redis_url, settings)
    stop = asyncio.Event()
    idle_ms = int(settings.reclaim_idle_s * 1000)
    jobs = JobStore(r, keys, settings.job_ttl_s, settings.events_maxlen, settings.webhook_events_maxlen)
    liveness = Liveness(r, keys, settings.heartbeat_ttl_s)
    router = Router(
        r, keys, models, direct=True, claim_idle_ms=idle_ms, max_deliveries=settings.max_deliveries, liveness=liveness
    )
    collector = Collector(
        r, keys, jobs, claim_idle_ms=idle_ms, max_deliveries=settings.max_deliveries, liveness=liveness
    )
    autoscaler = Autoscaler(r, keys, models, _backends(r, keys, models))
    webhooks, fanout, attempts = _webhook_parts(r, keys, liveness, idle_ms)
    ctx.update(
        keys=keys,
        models=models,
        fallback=FallbackMover(r, keys, models, planner=_planner(r, keys, models)),
        stream_redis=r,
        jobs=jobs,
        stop=stop,
        router=router,
        liveness=liveness,
        collector=collector,
        autoscaler=autoscaler,
        webhooks=webhooks,
        settings=settings,
        attempts=attempts,
        http=WebhookHttp(max_connections_per_host=WorkerSettings.max_jobs, ca_bundle=settings.webhook_ca_bundle),
        consumers=[
            asyncio.create_task(router.run(stop), name="router"),
            asyncio.create_task(collector.run(stop), name="collector"),
            asyncio.create_task(autoscaler.run(stop), name="autoscaler"),
            asyncio.create_task(fanout.run(stop), name="webhook-fanout"),
            asyncio.create_task(
                schedule_deliveries(attempts, arq_enqueuer(ctx["redis"], keys.arq_queue), stop),
                name="webhook-scheduler",
            ),
        ],
    )
    ctx["sinks"] = sink_runners(r, keys, models, settings)
    ctx["consumers"] += [asyncio.create_task(s.run(stop), name=f"sink-{s.name}") for s in ctx["sinks"]]
    _COUNTERS.source = ctx
    if settings.metrics_port and not _METRICS_SERVED:
        serve_ops(settings.metrics_port)  # /metrics, /healthz, /readyz
        _METRICS_SERVED.append(settings.metrics_port)
    ctx["consumers"].append(asyncio.create_task(_refresh_gauges(r, keys, models, stop), name="metrics"))
    ctx["consumers"].append(asyncio.create_task(sample_models(r, keys, models, stop), name="model-stats"))
    for task in ctx["consumers"]:
        task.add_done_callback(_exit_if_failed)
    log.info("dispatcher started", extra={"router": router.consumer, "collector": collector.consumer})


def _webhook_parts(
    r: aioredis.Redis, keys: Keys, liveness: Liveness, idle_ms: int
) -> tuple[WebhookStore, WebhookFanout, WebhookAttempts]:
    """The webhook store, the fan-out of events into deliveries, and the due attempts."""
    webhooks = WebhookStore(
        r,
        keys,
        delivery_ttl_s=settings.webhook_delivery_ttl_s,
        deliveries_per_endpoint=settings.webhook_deliveries_per_endpoint,
    )
    fanout = WebhookFanout(
        r,
        keys,
        webhooks,
        claim_idle_ms=idle_ms,
        max_deliveries=settings.max_deliveries,
        events_bound=settings.webhook_events_maxlen,
        liveness=liveness,
    )
    attempts = WebhookAttempts(
        r,
        keys,
        lease_s=settings.webhook_timeout_s + LEASE_MARGIN_S,
        max_per_endpoint=settings.webhook_max_concurrency_per_endpoint,
    )
    return webhooks, fanout, attempts


_LOCAL: list[LocalBackend] = []
_COUNTERS = metrics.DispatcherCounters()
_METRICS_SERVED: list[int] = []


async def _refresh_gauges(r, keys: Keys, models, stop: asyncio.Event, every_s: float = 5.0) -> None:
    """Backlog and replica gauges for this process's /metrics (the HTTP server runs in a thread)."""
    while not stop.is_set():
        try:
            await metrics.refresh_queue_gauges(r, keys, models)
        except Exception as exc:  # a scrape shows the last values; Redis trouble is logged elsewhere
            log.debug("metrics refresh failed: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass


def _local_backend(r, keys: Keys) -> LocalBackend:
    """One per process: when the arq worker restarts after a Redis outage, the new autoscaler
    keeps managing the worker processes the old one started, on the new connection."""
    if not _LOCAL:
        _LOCAL.append(LocalBackend(r, keys, log_dir=settings.local_worker_log_dir or None))
    _LOCAL[0].r = r
    return _LOCAL[0]


def _backends(r, keys: Keys, models) -> dict:
    """The scaling backends the models file uses (static models are left alone)."""
    used = {cfg.scaling.backend for cfg in models.models.values()}
    backends: dict = {}
    if "local" in used:
        backends["local"] = _local_backend(r, keys)
    if "modal" in used:
        from services.dispatcher.scaling.modal_backend import ModalBackend

        backends["modal"] = ModalBackend(r, keys, models, app_name=settings.modal_app)
    return backends


def _reporting(job):
    """A cron job that finds Redis briefly unable reports it (shared/redis/outage.py) and ends quietly
    instead of failing with a traceback each run; its next run tries again."""

    @functools.wraps(job)
    async def run(ctx: dict):
        try:
            done = await job(ctx)
        except TRANSIENT_REDIS_ERRORS as exc:
            OUTAGE.failed(job.__name__, exc)
            return None
        OUTAGE.recovered(job.__name__)
        return done

    return run


def _exit_if_failed(task: asyncio.Task) -> None:
    """A consumer that died of a bug must take the process down so the supervisor restarts it;
    every effect is atomic with its XACK, so exiting here loses nothing."""
    if not task.cancelled() and task.exception() is not None:
        log.critical("%s crashed; exiting", task.get_name(), exc_info=task.exception())
        logging.shutdown()
        os._exit(70)


async def shutdown(ctx: dict) -> None:
    """Stop reading; a batch already read finishes (it is one atomic step with its XACK)."""
    if "stop" not in ctx:
        return
    ctx["stop"].set()
    done, pending = await asyncio.wait(ctx["consumers"], timeout=settings.shutdown_grace_s)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception():
            log.error("%s stopped with an error", task.get_name(), exc_info=task.exception())
    local = ctx["autoscaler"].backends.get("local")
    if local is not None and not ctx.get("restarting"):  # workers this dispatcher started drain and stop with it
        await asyncio.to_thread(local.stop_all, settings.shutdown_grace_s + 10)
    await ctx["http"].aclose()
    await ctx["stream_redis"].aclose()
    log.info("dispatcher stopped", extra={"routed": ctx["router"].routed, "results_applied": ctx["collector"].applied})


class WorkerSettings:
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    queue_name = Keys(settings.key_prefix).arq_queue
    # typed as arq's settings protocol declares them
    on_startup: StartupShutdown | None = startup
    on_shutdown: StartupShutdown | None = shutdown
    functions: Sequence[WorkerCoroutine | Function] = [deliver_webhook]
    max_jobs = 100  # concurrent webhook attempts
    poll_delay = 0.1
    cron_jobs: Sequence[CronJob] | None = [
        cron(_reporting(trim_streams), second=set(range(0, 60, 10)), unique=True, run_at_startup=True),
        cron(_reporting(expire_due_jobs), second=set(range(60)), unique=True, timeout=50),
        cron(_reporting(finish_stranded_jobs), second=set(range(60)), unique=True, timeout=50),
        cron(_reporting(fallback_tick), second=set(range(60)), unique=True, timeout=50, run_at_startup=True),
    ]
    handle_signals = True
    job_timeout = 300
    keep_result = 0  # an attempt's outcome is kept in its delivery record; arq's copy would only hold memory
