"""Webhook endpoints and deliveries (API bodies and stored records), and Standard Webhooks signing.

Signing follows the Standard Webhooks specification: the secret is `whsec_` + base64 of random
bytes; the signature is base64(HMAC-SHA256(secret bytes, "{webhook-id}.{webhook-timestamp}.{body}"))
sent as `webhook-signature: v1,<sig>`, several space-separated while a rotated secret still signs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from shared.core.pages import Page
from shared.wire.api import JOB_EVENT_TYPES, EventType, JobWebhook, WebhookUrl

SECRET_PREFIX = "whsec_"
ROTATION_OVERLAP_S = 24 * 3600  # a replaced secret keeps signing this long
DEFAULT_EVENTS = JOB_EVENT_TYPES

__all__ = ["JobWebhook"]


class WebhookCreate(Struct, forbid_unknown_fields=True, kw_only=True):
    """Body of POST /v1/webhooks. `request.completed` is opt-in: one call per request."""

    url: WebhookUrl
    events: Annotated[list[EventType], Meta(min_length=1, max_length=6)] = msgspec.field(
        default_factory=lambda: list(DEFAULT_EVENTS)
    )
    description: Annotated[str, Meta(max_length=256)] = ""


class OldSecret(Struct, kw_only=True):
    secret: str
    expires_at: int


class WebhookRecord(Struct, kw_only=True):
    """A stored endpoint (Redis), secrets included."""

    id: str
    tenant: str
    url: str
    events: list[str]
    secret: str
    created_at: int
    description: str = ""
    status: Literal["enabled", "disabled"] = "enabled"
    disabled_reason: str | None = None
    job_id: str | None = None  # set for a job's own webhook
    old_secrets: list[OldSecret] = []


class WebhookEndpoint(Struct, kw_only=True):
    """A webhook endpoint as the API shows it. `secret` is shown when created and when rotated."""

    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    events: list[str]
    description: str
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None = None
    # a job's own endpoint only; absent otherwise (never null: an id a client follows always exists)
    job_id: str | msgspec.UnsetType = msgspec.UNSET
    created_at: int
    secret: str | None = None


class WebhookEndpointList(Page[WebhookEndpoint], kw_only=True):
    """GET /v1/webhooks: the tenant's endpoints, oldest first."""


DeliveryStatus = Literal["pending", "succeeded", "dead_lettered", "endpoint_disabled"]


class DeliveryAttempt(Struct, kw_only=True):
    at: int  # Unix ms
    status_code: int | None  # None: no HTTP answer
    error: str | None = None
    duration_ms: float | None = None  # None: its sender stopped before it knew


class DeliveryRecord(Struct, kw_only=True):
    """One event to one endpoint: the same webhook-id on every attempt."""

    id: str
    endpoint_id: str
    event_type: str
    event_id: str
    payload: str  # the exact body sent (JSON)
    status: DeliveryStatus = "pending"
    attempts: list[DeliveryAttempt] = []
    next_attempt_at: int | None = None  # Unix ms
    created_at: int


class Delivery(Struct, kw_only=True):
    """A delivery as GET /v1/webhooks/{id}/deliveries shows it."""

    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    endpoint_id: str
    event_type: str
    event_id: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: int | None
    created_at: int
    history: list[DeliveryAttempt]


class DeliveryList(Page[Delivery], kw_only=True):
    """GET /v1/webhooks/{id}/deliveries: an endpoint's deliveries, newest first."""


def delivery_view(rec: DeliveryRecord) -> Delivery:
    last = rec.attempts[-1] if rec.attempts else None
    return Delivery(
        id=rec.id,
        endpoint_id=rec.endpoint_id,
        event_type=rec.event_type,
        event_id=rec.event_id,
        status=rec.status,
        attempts=len(rec.attempts),
        last_status_code=last.status_code if last else None,
        last_error=last.error if last else None,
        next_attempt_at=rec.next_attempt_at,
        created_at=rec.created_at,
        history=rec.attempts,
    )


def endpoint_view(rec: WebhookRecord, *, with_secret: bool = False) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=rec.id,
        url=rec.url,
        events=rec.events,
        description=rec.description,
        status=rec.status,
        disabled_reason=rec.disabled_reason,
        job_id=rec.job_id if rec.job_id is not None else msgspec.UNSET,
        created_at=rec.created_at,
        secret=rec.secret if with_secret else None,
    )


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(rec: WebhookRecord, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature per secret still valid at `timestamp` (the current one first)."""
    secrets = [rec.secret] + [o.secret for o in rec.old_secrets if o.expires_at > timestamp]
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)
