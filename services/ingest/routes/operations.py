"""For operators and their tools: configured models with their queues, Prometheus metrics,
liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.ingest.deps import KeysDep, ModelsDep, RedisDep, TenantDep
from services.ingest.model_views import model_list
from services.ingest.openapi import describe
from services.ingest.responses import as_json
from shared.ops import metrics
from shared.redis.outage import OUTAGE, probe_writes
from shared.wire.api import Health, ModelList

router = APIRouter()


@router.get(
    "/v1/models",
    response_class=Response,
    summary="Configured models, their queues and replicas",
    responses={200: describe.json_response(ModelList, "Models")},
)
async def list_models(r: RedisDep, keys: KeysDep, models: ModelsDep, tenant: TenantDep) -> Response:
    return as_json(await model_list(r, keys, models, tenant))


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    include_in_schema=True,
    responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
async def prometheus_metrics(r: RedisDep, keys: KeysDep, models: ModelsDep) -> Response:
    await metrics.refresh_queue_gauges(r, keys, models)
    return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get(
    "/healthz", response_class=Response, summary="Liveness", responses={200: describe.json_response(Health, "Alive")}
)
async def healthz() -> Response:
    return as_json(Health(status="ok"))


@router.get(
    "/readyz",
    response_class=Response,
    summary="Readiness: Redis accepts writes",
    responses={
        200: describe.json_response(Health, "Ready"),
        503: describe.json_response(Health, "Redis unreachable or refusing writes"),
    },
)
async def readyz(request: Request) -> Response:
    try:
        await probe_writes(request.app.state.redis, request.app.state.keys.write_probe)
    except Exception as exc:  # any failure to write to Redis (or no client yet) means not ready
        OUTAGE.failed("api", exc)
        return as_json(Health(status="unavailable", detail=OUTAGE.describe()), 503)
    OUTAGE.recovered("api")
    return as_json(Health(status="ok"))
