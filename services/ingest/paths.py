"""The shape of every id in a URL path, and of the stream cursors a request may carry: a malformed
one is a 422 naming it, before any lookup. The patterns are services/ingest/patterns.py's, so the OpenAPI
document states exactly what is accepted."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from services.ingest import patterns

JobId = Annotated[str, Path(pattern=patterns.JOB_ID, description="Job id returned by POST /v1/jobs")]
DeadLetterId = Annotated[str, Path(pattern=patterns.STREAM_ID, description="A dead letter's id")]
FileId = Annotated[str, Path(pattern=patterns.FILE_ID, description="A file id")]
BatchId = Annotated[str, Path(pattern=patterns.BATCH_ID, description="A batch id")]
WebhookId = Annotated[str, Path(pattern=patterns.WEBHOOK_ID, description="Webhook endpoint id")]
DeliveryId = Annotated[str, Path(pattern=patterns.DELIVERY_ID, description="Delivery id (the webhook-id header)")]
