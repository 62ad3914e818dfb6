"""OpenAPI documents for routes whose bodies are msgspec Structs.

FastAPI only introspects pydantic models, so routes that decode with msgspec declare their schemas
here, generated from the same Structs, and `install` merges the components into /openapi.json.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

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


# What the job, results and dead-letter routes may answer besides success.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: json_response(ApiError, "Malformed request"),
    404: json_response(ApiError, "Not found"),
    413: json_response(ApiError, "Body or job too large"),
    422: json_response(ApiError, "Invalid field; `error.field` names it"),
    503: json_response(ApiError, "Redis unavailable; nothing was written"),
    429: json_response(
        ApiError,
        "Over capacity (the model's backlog), or the tenant's rate or queued-request limit;"
        " retry after `Retry-After` seconds",
    ),
}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, components = schema_components(list(_REGISTERED) + [ApiError])
        doc.setdefault("components", {}).setdefault("schemas", {}).update(components)
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key (`inferq keys create`)"}
        }
        unauthorized = json_response(ApiError, "Missing, unknown or revoked API key (`WWW-Authenticate: Bearer`)")
        for path, ops in doc.get("paths", {}).items():
            if not path.startswith("/v1/"):
                continue
            for op in ops.values():
                op["security"] = [{"bearer": []}]
                op.setdefault("responses", {}).setdefault("401", unauthorized)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
