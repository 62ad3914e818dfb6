"""The query parameters every list route takes: `limit` (1 to MAX_LIMIT, default DEFAULT_LIMIT)
and `after` (the previous page's `next_cursor`, the last item's id). Out of range or malformed is
a 422 naming the parameter, before any lookup."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from services.ingest import patterns
from shared.core.pages import DEFAULT_LIMIT, MAX_LIMIT

Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})")
]


def _after(pattern: str, what: str) -> Any:
    return Query(pattern=pattern, description=f"`next_cursor` of the previous page: {what}")


AfterBatch = Annotated[str | None, _after(patterns.BATCH_ID, "a batch id")]
AfterFile = Annotated[str | None, _after(patterns.UPLOADED_FILE_ID, "a file id")]
AfterWebhook = Annotated[str | None, _after(patterns.WEBHOOK_ID, "a webhook endpoint id")]
AfterDelivery = Annotated[str | None, _after(patterns.DELIVERY_ID, "a delivery id")]
AfterDeadLetter = Annotated[str | None, _after(patterns.STREAM_ID, "a dead-letter id")]
