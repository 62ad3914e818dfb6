"""OpenAPI documents for routes whose bodies are msgspec Structs.

FastAPI only introspects pydantic models, so routes that decode with msgspec declare their schemas
here, generated from the same Structs, and `install` merges the components into /openapi.json.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from shared.api import schema_components

_REGISTERED: list[type] = []


def ref(t: type) -> dict[str, str]:
    if t not in _REGISTERED:
        _REGISTERED.append(t)
    return {"$ref": f"#/components/schemas/{t.__name__}"}


def json_body(t: type) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref(t)}}}}


def json_response(t: type, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(t)}}}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, components = schema_components(list(_REGISTERED))
        doc.setdefault("components", {}).setdefault("schemas", {}).update(components)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
