"""GET /v1/model-stats: each model's throughput and latency over the last minute, and its recent
history (results, latency, backlog, replicas per bucket), as the collector and the dispatcher's
sampler recorded them. Models are shared by every tenant, as in GET /v1/models."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from services.ingest.deps import KeysDep, ModelsDep, RedisDep
from services.ingest.openapi import describe
from services.ingest.responses import as_json
from shared.models.stats import read_stats
from shared.wire.api import ModelStatsList

router = APIRouter()


@router.get(
    "/v1/model-stats",
    response_class=Response,
    summary="Per model: throughput and latency over the last minute, backlog and replicas over the last minutes",
    description=(
        "One item per configured model, in the order of GET /v1/models. `samples` holds one entry per "
        "`bucket_s` seconds over the last `window_s` seconds, oldest first, the current (partial) bucket last."
    ),
    responses={200: describe.json_response(ModelStatsList, "Models' recent figures")},
)
async def model_stats(r: RedisDep, keys: KeysDep, models: ModelsDep) -> Response:
    return as_json(ModelStatsList(data=await read_stats(r, keys, models.names())))
