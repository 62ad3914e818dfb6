"""Read a request body without ever holding more than the configured limit in memory."""

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


def _too_large(limit: int) -> ApiException:
    return ApiException(
        413, f"request body is larger than the limit of {limit} bytes", type="request_too_large", field="body"
    )
