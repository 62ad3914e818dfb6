"""OpenAPI links, derived from the paths: an operation that answers with a resource's `id` (a
create) or a page of them (a list) links to the operations on that resource, so clients and
stateful tests can follow real ids. A route added under an existing path is linked the same way.

- `POST /v1/x` answering `{"id"}` links to every operation under `/v1/x/{x_id}`;
- `GET /v1/x` answering `{"data": [{"id"}]}` links there too, with the first item's id;
- the same below a resource: `GET /v1/x/{x_id}/y` to `/v1/x/{x_id}/y/{y_id}/...`, keeping `x_id`;
- an uploaded file's id is a batch's `input_file_id` (POST /v1/files to POST /v1/batches)."""

from __future__ import annotations

import re
from typing import Any

_PARAM = re.compile(r"^\{(\w+)\}$")


def _json_schema(doc: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    name = schema.get("$ref", "").rpartition("/")[2]
    return doc.get("components", {}).get("schemas", {}).get(name, schema) if name else schema


def _item_schema(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    items = schema.get("properties", {}).get("data", {}).get("items", {})
    name = items.get("$ref", "").rpartition("/")[2]
    return doc.get("components", {}).get("schemas", {}).get(name, items) if name else items


def _source_id(doc: dict[str, Any], method: str, schema: dict[str, Any]) -> str | None:
    """Where a response holds the id of the resource below its path, if it does."""
    props = schema.get("properties", {})
    if method == "post" and "id" in props:
        return "$response.body#/id"
    if method == "get" and "id" in _item_schema(doc, schema).get("properties", {}):
        return "$response.body#/data/0/id"
    return None


def _targets(doc: dict[str, Any], base: str):
    """Operations under `base/{param}` whose only path parameter beyond base's is that one."""
    depth = base.count("/") + 1
    for path, ops in doc.get("paths", {}).items():
        parts = path.split("/")
        if not path.startswith(base + "/") or len(parts) <= depth:
            continue
        m = _PARAM.match(parts[depth])
        if m is None or any(_PARAM.match(p) for p in parts[depth + 1 :]):
            continue
        for method, op in ops.items():
            yield m.group(1), method, op


def apply(doc: dict[str, Any]) -> None:
    paths = doc.get("paths", {})
    for path, ops in paths.items():
        own = [m.group(1) for p in path.split("/") if (m := _PARAM.match(p))]
        for method, op in ops.items():
            for status, response in op.get("responses", {}).items():
                if not status.startswith("2"):
                    continue
                source = _source_id(doc, method, _json_schema(doc, response))
                if source is None:
                    continue
                links = {}
                for param, _, target in _targets(doc, path):
                    parameters = {name: f"$request.path.{name}" for name in own}
                    parameters[param] = source
                    links[target["operationId"]] = {"operationId": target["operationId"], "parameters": parameters}
                if path == "/v1/files" and method == "post" and "post" in paths.get("/v1/batches", {}):
                    target_id = paths["/v1/batches"]["post"]["operationId"]
                    links[target_id] = {"operationId": target_id, "requestBody": {"input_file_id": source}}
                if links:
                    response["links"] = links
