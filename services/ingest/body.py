"""Read a request body without ever holding more than the configured limit in memory; a JSON body
only when it is sent as JSON (a form or plain text that happens to parse is refused, not guessed)."""

from __future__ import annotations

from fastapi import Request

from services.ingest.errors.client import ApiException


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
    return b"".join(parts)


async def read_json(request: Request, limit: int) -> bytes:
    """The body of a route that takes JSON: 415 unless its Content-Type is `application/json`."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        sent = f"Content-Type {media!r}" if media else "no Content-Type"
        raise ApiException(
            415,
            f"Content-Type: the body must be sent as application/json (this request has {sent})",
            type="unsupported_media_type",
            field="Content-Type",
        )
    return await read_limited(request, limit)


def _too_large(limit: int) -> ApiException:
    return ApiException(
        413, f"request body is larger than the limit of {limit} bytes", type="request_too_large", field="body"
    )
