"""The query parameters every list route takes: `limit` (1 to MAX_LIMIT, default DEFAULT_LIMIT)
and `after` (the previous page's `next_cursor`, the last item's id). Out of range or malformed is
a 422 naming the parameter, before any lookup."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from shared.pages import DEFAULT_LIMIT, MAX_LIMIT

Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})")
]


def _after(pattern: str, what: str) -> Any:
    return Query(pattern=pattern, description=f"`next_cursor` of the previous page: {what}")


AfterBatch = Annotated[str | None, _after(r"^batch_[0-9a-z]{26}$", "a batch id")]
AfterFile = Annotated[str | None, _after(r"^file-[0-9a-z]{26}$", "a file id")]
AfterWebhook = Annotated[str | None, _after(r"^wh_[0-9a-z]{26}$", "a webhook endpoint id")]
AfterDelivery = Annotated[str | None, _after(r"^msg_[0-9a-f]{26}$", "a delivery id")]
AfterDeadLetter = Annotated[str | None, _after(r"^\d{1,20}-\d{1,20}$", "a dead-letter id")]
