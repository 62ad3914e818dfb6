"""The error statuses of every operation, derived from what the operation takes when /openapi.json
is built, so a route added or changed later is documented by the same rules.

What an operation takes decides what it can answer: a /v1 route checks the API key (401, when
auth is on) and reads Redis (503 while Redis is briefly unable); a parameter can be malformed
(422); an id in the path can name nothing (404); a body can be unparsable (400), too large (413),
or, for a JSON body, sent as something else (415). A status with another cause (a 409, a 429, a
404 for an id in a body) is declared by its route (`describe.route_error`). A generic error a
route declared that its operation cannot produce is dropped; a response with a body of its own
(the readiness probe's 503) is the route's."""

from __future__ import annotations

from typing import Any

_ERROR_REF = {"$ref": "#/components/schemas/ApiError"}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying",
    "schema": {"type": "string", "pattern": r"^\d+$"},
}
DESCRIPTIONS = {
    400: "Malformed body (not JSON, or an unparsable form)",
    401: "Missing, unknown or revoked API key",
    404: "Not found (or another tenant's)",
    413: "Body larger than the server's limit",
    415: "Body not sent as `application/json` (its Content-Type)",
    422: "Invalid field; `error.field` names it",
    503: "Redis is briefly unable to serve; retry after `Retry-After` seconds",
}
# the statuses the rules below decide; any other one is the route's
DERIVED = frozenset(DESCRIPTIONS)
# marks a response a route declares for a cause of its own (removed from the published document)
ROUTE_DECLARED = "x-route-declared"


def error_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}
    if headers:
        response["headers"] = headers
    return response


def _is_error_body(response: dict[str, Any]) -> bool:
    return response.get("content", {}).get("application/json", {}).get("schema") == _ERROR_REF


def statuses(path: str, method: str, op: dict[str, Any], auth_on: bool) -> set[int]:
    """The derived error statuses of one operation."""
    params = op.get("parameters", [])
    body = "requestBody" in op
    found: set[int] = set()
    if path.startswith("/v1/"):
        found.add(503)
        if auth_on:
            found.add(401)
    elif path == "/metrics":  # it reads the queues from Redis
        found.add(503)
    if params or body:
        found.add(422)
    if any(p.get("in") == "path" for p in params):
        found.add(404)
    if body:
        found |= {400, 413}
        if "application/json" in op["requestBody"].get("content", {}):
            found.add(415)
    return found


def apply(doc: dict[str, Any], auth_on: bool) -> None:
    """Set every operation's derived error responses; keep those its route declared for other causes."""
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            derived = statuses(path, method, op, auth_on)
            for code in DERIVED:
                declared = responses.get(str(code))
                if declared is not None and (declared.get(ROUTE_DECLARED) or not _is_error_body(declared)):
                    continue  # the route's own cause (a 404 for an id in its body), or its own body
                if code in derived:
                    responses[str(code)] = error_response(DESCRIPTIONS[code])
                elif declared is not None:
                    del responses[str(code)]
            if "503" in responses and path.startswith(("/v1/", "/metrics")):
                responses["503"]["headers"] = {"Retry-After": {**_RETRY_AFTER, "required": True}}
            if "401" in responses:
                responses["401"]["headers"] = {
                    "WWW-Authenticate": {"description": "`Bearer`", "required": True, "schema": {"type": "string"}}
                }
            if "429" in responses:  # a rate or backlog limit says when to retry; a used-up quota does not
                responses["429"]["headers"] = {"Retry-After": _RETRY_AFTER}
            for response in responses.values():
                response.pop(ROUTE_DECLARED, None)
