"""What routes need, as FastAPI dependencies read from `app.state`: `create_app` puts the
configuration there and the lifespan the Redis-backed stores, so a route module holds no state.
They are `async def` so that FastAPI calls them inline: a plain `def` dependency is run in its
thread pool, a thread hand-off per dependency and request."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from services.ingest.auth import tenant_of
from services.ingest.file_store import FileStore
from services.ingest.job_listing import JobLister
from services.ingest.limits import TenantLimits
from services.ingest.quoting import Quoter
from shared.catalog.models import ModelsConfig
from shared.core.settings import Settings
from shared.jobs.store import JobStore
from shared.redis.keys import Keys
from shared.webhooks.store import WebhookStore


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _models(request: Request) -> ModelsConfig:
    return request.app.state.models


async def _keys(request: Request) -> Keys:
    return request.app.state.keys


async def _redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis


async def _jobs(request: Request) -> JobStore:
    return request.app.state.jobs


async def _job_lister(request: Request) -> JobLister:
    return request.app.state.job_lister


async def _webhooks(request: Request) -> WebhookStore:
    return request.app.state.webhooks


async def _files(request: Request) -> FileStore:
    return request.app.state.files


async def _limits(request: Request) -> TenantLimits:
    return request.app.state.limits


async def _model_limits(request: Request) -> dict[str, int]:
    """Each model's `max_backlog`, for the admission check of a new job."""
    return request.app.state.model_limits


async def _quoter(request: Request) -> Quoter:
    return request.app.state.quoter


async def _tenant(request: Request) -> str:
    return tenant_of(request)


SettingsDep = Annotated[Settings, Depends(_settings)]
ModelsDep = Annotated[ModelsConfig, Depends(_models)]
KeysDep = Annotated[Keys, Depends(_keys)]
RedisDep = Annotated[aioredis.Redis, Depends(_redis)]
JobsDep = Annotated[JobStore, Depends(_jobs)]
JobListerDep = Annotated[JobLister, Depends(_job_lister)]
WebhooksDep = Annotated[WebhookStore, Depends(_webhooks)]
FilesDep = Annotated[FileStore, Depends(_files)]
LimitsDep = Annotated[TenantLimits, Depends(_limits)]
ModelLimitsDep = Annotated[dict[str, int], Depends(_model_limits)]
QuoterDep = Annotated[Quoter, Depends(_quoter)]
# The caller's tenant, set by the app-wide authentication dependency that runs first.
TenantDep = Annotated[str, Depends(_tenant)]
