"""The OpenAPI document (/openapi.json), exact for the running server.

FastAPI only introspects pydantic models, so routes that decode with msgspec name their Structs
(`describe.py`), and `install` merges the schemas generated from them into the document.
When it is built, the error statuses of every operation are derived (`errors.py`), the
limits that come from the configuration are written into the schemas (`config.py`), and
links between operations are added (`links.py`), so the document follows the routes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.ingest.openapi import config, describe, errors, links
from shared.wire.api import ApiError, schema_components


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


def _closed_forms(doc: dict[str, Any]) -> None:
    """A multipart body takes the fields its schema names and no other (the routes refuse the rest)."""
    schemas = doc.get("components", {}).get("schemas", {})
    for ops in doc.get("paths", {}).values():
        for op in ops.values():
            form = op.get("requestBody", {}).get("content", {}).get("multipart/form-data", {})
            name = form.get("schema", {}).get("$ref", "").rpartition("/")[2]
            if name in schemas:
                schemas[name]["additionalProperties"] = False


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, components = schema_components(describe.registered() + [ApiError])
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
        _closed_forms(doc)
        errors.apply(doc, auth_on)
        config.apply(doc, app.state.settings, app.state.models)
        links.apply(doc)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
