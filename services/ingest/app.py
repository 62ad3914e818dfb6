"""The ingest HTTP API (FastAPI): the routers of services/ingest/routes/, one per area, assembled
with the configuration and the Redis-backed stores they read from `app.state`."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from services.ingest import dashboard
from services.ingest.auth import Authenticator
from services.ingest.errors.handlers import EXCEPTION_HANDLERS
from services.ingest.file_store import FileStore
from services.ingest.http_metrics import HttpMetrics
from services.ingest.job_listing import JobLister
from services.ingest.limits import TenantLimits
from services.ingest.openapi import document
from services.ingest.quoting import Quoter

# imported in the order of /openapi.json, whose schemas are listed as the routes first name them
from services.ingest.routes import dead_letters, jobs, model_stats, openai_batches, operations, results, sinks, webhooks  # noqa: I001
from shared.catalog.api_keys import ApiKeyStore
from shared.catalog.models import ModelsConfig, load_models
from shared.core.settings import Settings
from shared.jobs.store import JobStore
from shared.redis.client import connect
from shared.redis.keys import Keys
from shared.redis.outage import watch_recovery
from shared.webhooks.store import WebhookStore

ROUTERS = (openai_batches.router, webhooks.router, jobs.router, dead_letters.router, results.router, operations.router)
# the dashboard's additions, in their own modules
EXTRA_ROUTERS = (model_stats.router, sinks.router)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """One Redis client for the process, and the stores built on it."""
    state = app.state
    r = connect(state.settings.redis_url, state.settings)
    state.redis = r
    state.jobs = JobStore(r, state.keys, state.settings.job_ttl_s)
    state.job_lister = JobLister(r, state.keys)
    state.webhooks = WebhookStore(
        r,
        state.keys,
        delivery_ttl_s=state.settings.webhook_delivery_ttl_s,
        deliveries_per_endpoint=state.settings.webhook_deliveries_per_endpoint,
    )
    state.files = FileStore(r, state.keys)
    state.limits = TenantLimits(r, state.keys, state.settings)
    state.quoter = Quoter(r, state.keys, state.models)
    state.auth.store = ApiKeyStore(r, state.keys)
    watcher = asyncio.create_task(watch_recovery(r, state.keys.write_probe, "api"), name="redis-recovery")
    yield
    watcher.cancel()
    await r.aclose()


def create_app(settings: Settings | None = None, models: ModelsConfig | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    models = models or load_models(settings.models_path)  # a bad models file stops the service here
    auth = Authenticator(settings)
    app = FastAPI(
        dependencies=[Depends(auth)],
        title="inferq",
        version="0.1.0",
        description="Submit batches of LLM requests as jobs; follow their state and stream their results.",
        lifespan=_lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.settings = settings
    app.state.models = models
    app.state.keys = Keys(settings.key_prefix)
    app.state.model_limits = {name: cfg.flow.max_backlog for name, cfg in models.models.items()}
    app.state.auth = auth
    app.state.auth_enabled = auth.enabled
    app.add_middleware(HttpMetrics)
    for router in (*ROUTERS, *EXTRA_ROUTERS):
        app.include_router(router)
    dashboard.mount(app)
    document.install(app)
    return app
