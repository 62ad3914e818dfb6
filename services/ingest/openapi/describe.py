"""How a route describes its body and its answers in the OpenAPI document: each Struct it names
is registered here, and its schema is generated from that Struct when the document is built
(FastAPI only introspects pydantic models; these routes decode with msgspec)."""

from __future__ import annotations

from typing import Any

from services.ingest.openapi import errors
from shared.wire.api import ApiError

_REGISTERED: list[type] = []


def registered() -> list[type]:
    """Every Struct a route has named so far, in the order they were first named."""
    return list(_REGISTERED)


def ref(t: type) -> dict[str, str]:
    if t not in _REGISTERED:
        _REGISTERED.append(t)
    return {"$ref": f"#/components/schemas/{t.__name__}"}


def json_body(t: type) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref(t)}}}}


def json_response(t: type, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(t)}}}


def route_error(description: str) -> dict[str, Any]:
    """An error a route answers for a cause of its own (a 404 for an id in its body, a 409, a 429);
    the statuses every route of its kind can answer are added when the document is built."""
    return {**json_response(ApiError, description), errors.ROUTE_DECLARED: True}


def sse_response(description: str, events: dict[str, list[type]], id_pattern: str) -> dict[str, Any]:
    """A text/event-stream answer: `schema` describes one event (OpenAPI 3.1), its `data` a JSON
    document of one of the Structs its event name allows."""
    documents = [ref(t) for t in dict.fromkeys(t for types in events.values() for t in types)]
    event = {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": list(events)},
            "id": {"type": "string", "pattern": id_pattern},
            "retry": {"type": "integer", "minimum": 0},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {"anyOf": documents}},
        },
    }
    return {"description": description, "content": {"text/event-stream": {"schema": event}}}


# The generic error statuses (400, 401, 404, 413, 422, 503) are derived for every operation when
# the document is built; this stays for routes that spread it.
ERRORS: dict[int | str, dict[str, Any]] = {}
OVER_CAPACITY = route_error(
    "Over capacity (the model's backlog), or the tenant's rate or queued-request limit;"
    " retry after `Retry-After` seconds"
)
