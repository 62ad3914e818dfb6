"""The OpenAPI document (/openapi.json), exact for the running server.

FastAPI only introspects pydantic models, so routes that decode with msgspec declare their schemas
here, generated from the same Structs, and `install` merges the components into the document.
When it is built, the error statuses of every operation are derived (`openapi_errors`), the
limits that come from the configuration are written into the schemas (`openapi_config`), and
links between operations are added (`openapi_links`), so the document follows the routes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.ingest import openapi_config, openapi_errors, openapi_links
from shared.api import ApiError, schema_components

_REGISTERED: list[type] = []


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
    return {**json_response(ApiError, description), openapi_errors.ROUTE_DECLARED: True}


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


def _no_null_parameters(doc: dict[str, Any]) -> None:
    """An optional parameter is left out, never null (a query string or header has no null); the
    `null` FastAPI adds to the schema of an optional one would read as the text "null"."""
    for ops in doc.get("paths", {}).values():
        for op in ops.values():
            for param in op.get("parameters", ()):
                schema = param.get("schema", {})
                branches = [b for b in schema.get("anyOf", ()) if b.get("type") != "null"]
                if len(branches) == 1 and len(schema["anyOf"]) == 2:
                    del schema["anyOf"]
                    schema.update(branches[0])


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, components = schema_components(list(_REGISTERED) + [ApiError])
        doc.setdefault("components", {}).setdefault("schemas", {}).update(components)
        auth_on = bool(app.state.auth_enabled)
        if auth_on:
            doc["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key (`inferq keys create`)"}
            }
            for path, ops in doc.get("paths", {}).items():
                if path.startswith("/v1/"):
                    for op in ops.values():
                        op["security"] = [{"bearer": []}]
        _no_null_parameters(doc)
        openapi_errors.apply(doc, auth_on)
        openapi_config.apply(doc, app.state.settings, app.state.models)
        openapi_links.apply(doc)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
