"""GET /v1/sinks: the event sinks of the models file, read-only, with each one's cursor, lag,
counters and last error. A sink scoped to tenants (`tenants = [...]`) is shown to those tenants; an
unscoped one carries every tenant's events, so it is shown only when auth is off (to the operator
of a one-tenant setup), as dead letters that name no tenant are."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.ingest.auth import tenant_of
from services.ingest.deps import KeysDep, ModelsDep, RedisDep
from services.ingest.openapi import describe
from services.ingest.responses import as_json
from services.ingest.sink_status import read_sinks
from shared.wire.api import SinkList

router = APIRouter()


@router.get(
    "/v1/sinks",
    response_class=Response,
    summary="The event sinks and how far each has got",
    description=(
        "Each `[sinks.NAME]` of the models file that the caller may see: what it sends where, its "
        "cursor on the events stream, `lag` (events not yet handed over), `delivered`, `lost` "
        "(trimmed from the stream before the sink read them), `rejected` (refused by the receiver "
        "as malformed) and its last error. Credentials are never shown."
    ),
    responses={200: describe.json_response(SinkList, "The sinks")},
)
async def list_sinks(request: Request, r: RedisDep, keys: KeysDep, models: ModelsDep) -> Response:
    tenant, everything = tenant_of(request), not request.app.state.auth_enabled
    visible = {n: s for n, s in models.sinks.items() if everything or tenant in s.tenants}
    return as_json(SinkList(data=await read_sinks(r, keys, visible)))
