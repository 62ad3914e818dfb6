"""The shape of every id in a URL path: a malformed id is a 422 naming it, before any lookup."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

JobId = Annotated[str, Path(pattern=r"^job_[0-9a-z]{26}$", description="Job id returned by POST /v1/jobs")]
DeadLetterId = Annotated[str, Path(pattern=r"^\d{1,20}-\d{1,20}$")]
FileId = Annotated[str, Path(pattern=r"^file-[0-9a-z]{26}(-output|-errors)?$", description="A file id")]
BatchId = Annotated[str, Path(pattern=r"^batch_[0-9a-z]{26}$", description="A batch id")]
WebhookId = Annotated[str, Path(pattern=r"^wh_[0-9a-z]{26}$", description="Webhook endpoint id")]
DeliveryId = Annotated[str, Path(pattern=r"^msg_[0-9a-f]{26}$", description="Delivery id (the webhook-id header)")]
