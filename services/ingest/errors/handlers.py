"""Every exception the API answers for, mapped to its handler in one place (given to FastAPI as
`exception_handlers`). Each answer is an `ApiError` body; nothing escapes as a bare 500."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.ingest.errors.client import (
    MALFORMED,
    PATTERN_MISMATCH,
    ApiException,
    error_response,
    handle_api_exception,
)
from shared.core.errors import REDIS_UNAVAILABLE, redis_refused
from shared.redis.outage import OUTAGE
from shared.wire.api import ApiErrorBody

# Headers the API reads, as their specifications spell them (ASGI hands them over lower-cased).
HEADER_NAMES = {name.lower(): name for name in ("Last-Event-ID", "Idempotency-Key", "Authorization")}


async def _invalid_request(_: Request, exc: RequestValidationError) -> Response:
    """A path, query or header parameter FastAPI rejected: 422 naming it (a header by its name)."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("path", "query", "body")]
    if loc[:1] == ["header"] and len(loc) > 1:
        loc = [HEADER_NAMES.get(loc[1].lower(), loc[1])]
    field = ".".join(loc) or None
    message = PATTERN_MISMATCH.sub(MALFORMED, str(first.get("msg", "invalid")))
    return error_response(422, ApiErrorBody(message=f"{field}: {message}", type="invalid_request_error", field=field))


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Routing's own answers (unknown path 404, wrong method 405, unparsable form 400) in the same
    body as ours. A 405 carries `Allow` (RFC 9110): every method of the path, not only those of
    the first route Starlette tried, since one path can have several routes."""
    if exc.status_code == 400 and request.url.path.startswith("/v1/"):
        # FastAPI parses a form before the app's dependencies run: the key is checked first here,
        # so an unauthenticated caller gets 401 for a bad body too, as for anything else
        try:
            await request.app.state.auth.tenant(request)
        except ApiException as denied:
            return await handle_api_exception(request, denied)
        except REDIS_UNAVAILABLE as unavailable:
            return await _redis_unavailable(request, unavailable)
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (methods := allowed_methods(request)):  # else Starlette's stands
        headers["Allow"] = ", ".join(methods)
    return error_response(exc.status_code, ApiErrorBody(message=str(exc.detail), type="http_error"), headers or None)


def allowed_methods(request: Request) -> list[str]:
    """The methods the document gives the request's path (FastAPI keeps the routes of included
    routers inside them, so Starlette's own `Allow` names only the first route it tried)."""
    path = request.url.path
    paths = request.app.openapi().get("paths", {})
    if path in paths:  # a path of its own (`/v1/jobs/quote`) is not also a value of a template's parameter
        return sorted(m.upper() for m in paths[path])
    methods: set[str] = set()
    for template, ops in paths.items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            methods |= {m.upper() for m in ops}
    return sorted(methods)


async def _redis_unavailable(request: Request, exc: Exception) -> Response:
    """Redis is briefly unable (out of memory, read-only, not persisting, loading, busy, silent or
    unreachable): 503 with Retry-After, logged once per outage (shared/redis/outage.py). Every write is
    one script call: refused, it wrote nothing; cut off, it may have run, which a retry with the
    same Idempotency-Key settles."""
    OUTAGE.failed("api", exc)
    if redis_refused(exc):
        outcome = "nothing was written"
    else:
        outcome = "a write may or may not have been applied (retry with the same Idempotency-Key to be sure)"
    return error_response(
        503,
        ApiErrorBody(
            message=f"the queue store (Redis) is briefly unable to serve ({type(exc).__name__}); {outcome}; "
            "retry shortly",
            type="unavailable",
        ),
        {"Retry-After": str(request.app.state.settings.retry_after_s)},
    )


# keyed as FastAPI's `exception_handlers` is (each handler takes its own exception type)
EXCEPTION_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
    ApiException: handle_api_exception,
    RequestValidationError: _invalid_request,
    StarletteHTTPException: _http_error,
    **{error: _redis_unavailable for error in REDIS_UNAVAILABLE},
}
