"""/v1/webhooks: register endpoints that receive signed job events, rotate their secrets, and
see (and redo) their deliveries."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.ingest.body import read_json
from services.ingest.deps import SettingsDep, TenantDep, WebhooksDep
from services.ingest.errors.client import ApiException, decode_body, quota_exceeded
from services.ingest.openapi import describe
from services.ingest.paging import AfterDelivery, AfterWebhook, Limit
from services.ingest.paths import DeliveryId, WebhookId
from services.ingest.responses import as_json
from services.ingest.webhook_urls import checked_url
from shared.core.errors import DeliveryPending, EndpointLimitReached
from shared.core.pages import DEFAULT_LIMIT, page_of
from shared.webhooks.records import (
    Delivery,
    DeliveryList,
    WebhookCreate,
    WebhookEndpoint,
    WebhookEndpointList,
    delivery_view,
    endpoint_view,
)
from shared.wire.api import ApiError

router = APIRouter()
_create_decoder = msgspec.json.Decoder(WebhookCreate)
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: describe.json_response(ApiError, "Not found"),
    422: describe.json_response(ApiError, "Invalid field; `error.field` names it"),
}
MAX_BODY_BYTES = 64 * 1024  # an endpoint's registration is small


def _not_found(endpoint_id: str) -> ApiException:
    return ApiException(404, f"webhook endpoint {endpoint_id} not found", type="not_found", field="webhook_id")


@router.post(
    "/v1/webhooks",
    status_code=201,
    response_class=Response,
    summary="Register a webhook endpoint",
    description="Events are signed per Standard Webhooks with the returned `secret` (shown only now and on rotation). "
    "URLs must be https and must not resolve to private, loopback or link-local addresses.",
    openapi_extra=describe.json_body(WebhookCreate),
    responses={
        201: describe.json_response(WebhookEndpoint, "Created, with its secret"),
        **_ERRORS,
        429: describe.json_response(
            ApiError, "The tenant has INFERQ_TENANT_WEBHOOKS endpoints already (`error.quota`, `limit`, `used`)"
        ),
    },
)
async def create_webhook(request: Request, settings: SettingsDep, store: WebhooksDep, tenant: TenantDep) -> Response:
    body = await read_json(request, MAX_BODY_BYTES)
    spec = decode_body(_create_decoder, body)
    await checked_url(spec.url, settings, "url")
    try:
        rec = await store.create(tenant, spec, max_endpoints=settings.tenant_webhooks)
    except EndpointLimitReached as exc:
        raise quota_exceeded(
            429,
            "INFERQ_TENANT_WEBHOOKS",
            exc.limit,
            exc.count,
            f"the tenant already has {exc.count} webhook endpoints, its quota (INFERQ_TENANT_WEBHOOKS); "
            "delete one first",
            "url",
        ) from None
    return as_json(endpoint_view(rec, with_secret=True), 201)


@router.get(
    "/v1/webhooks",
    response_class=Response,
    summary="List webhook endpoints",
    responses={200: describe.json_response(WebhookEndpointList, "A page of endpoints, oldest first"), **_ERRORS},
)
async def list_webhooks(
    store: WebhooksDep, tenant: TenantDep, limit: Limit = DEFAULT_LIMIT, after: AfterWebhook = None
) -> Response:
    found = await store.read_endpoints(tenant, after, limit + 1)
    return as_json(page_of([endpoint_view(rec) for rec in found], limit, _id))


def _id(item: WebhookEndpoint | Delivery) -> str:
    return item.id


@router.get(
    "/v1/webhooks/{webhook_id}",
    response_class=Response,
    summary="Get a webhook endpoint",
    responses={200: describe.json_response(WebhookEndpoint, "The endpoint"), **_ERRORS},
)
async def get_webhook(webhook_id: WebhookId, store: WebhooksDep, tenant: TenantDep) -> Response:
    rec = await store.get(webhook_id, tenant)
    if rec is None:
        raise _not_found(webhook_id)
    return as_json(endpoint_view(rec))


@router.delete(
    "/v1/webhooks/{webhook_id}",
    response_class=Response,
    summary="Delete a webhook endpoint",
    description="Pending deliveries to it end `endpoint_disabled`.",
    responses={200: describe.json_response(WebhookEndpoint, "The deleted endpoint"), **_ERRORS},
)
async def delete_webhook(webhook_id: WebhookId, store: WebhooksDep, tenant: TenantDep) -> Response:
    rec = await store.get(webhook_id, tenant)
    if rec is None or not await store.delete(tenant, webhook_id):
        raise _not_found(webhook_id)
    return as_json(endpoint_view(rec))


@router.post(
    "/v1/webhooks/{webhook_id}/rotate",
    response_class=Response,
    summary="Rotate the signing secret",
    description="Returns the new secret. For 24 hours events carry signatures with both the old and the new secret.",
    responses={200: describe.json_response(WebhookEndpoint, "The endpoint with its new secret"), **_ERRORS},
)
async def rotate_webhook(webhook_id: WebhookId, store: WebhooksDep, tenant: TenantDep) -> Response:
    rec = await store.rotate(tenant, webhook_id)
    if rec is None:
        raise _not_found(webhook_id)
    return as_json(endpoint_view(rec, with_secret=True))


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    response_class=Response,
    summary="Deliveries to an endpoint",
    responses={
        200: describe.json_response(DeliveryList, "A page of deliveries, newest first, with every attempt"),
        **_ERRORS,
    },
)
async def list_deliveries(
    webhook_id: WebhookId,
    store: WebhooksDep,
    tenant: TenantDep,
    limit: Limit = DEFAULT_LIMIT,
    after: AfterDelivery = None,
) -> Response:
    if await store.get(webhook_id, tenant) is None:
        raise _not_found(webhook_id)
    found = await store.read_deliveries(webhook_id, after, limit + 1)
    if found is None:
        raise ApiException(
            404, f"after: delivery {after} not found among this endpoint's deliveries", type="not_found", field="after"
        )
    return as_json(page_of([delivery_view(d) for d in found], limit, _id))


@router.post(
    "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    response_class=Response,
    summary="Send a delivery again",
    description="Schedules a new attempt now, with the same webhook-id.",
    responses={
        200: describe.json_response(Delivery, "The delivery, pending again"),
        409: describe.json_response(ApiError, "The endpoint is disabled, or the delivery is still pending"),
        **_ERRORS,
    },
)
async def redeliver(webhook_id: WebhookId, delivery_id: DeliveryId, store: WebhooksDep, tenant: TenantDep) -> Response:
    endpoint = await store.get(webhook_id, tenant)
    if endpoint is None:
        raise _not_found(webhook_id)
    if endpoint.status != "enabled":
        raise ApiException(
            409,
            f"webhook endpoint {webhook_id} is disabled ({endpoint.disabled_reason})",
            type="endpoint_disabled",
            field="webhook_id",
        )
    try:
        rec = await store.redeliver(webhook_id, delivery_id)
    except DeliveryPending as exc:
        due = exc.rec.next_attempt_at
        raise ApiException(
            409,
            f"delivery {delivery_id} is pending: its next attempt is scheduled"
            + (f" for {due} (Unix ms)" if due else ""),
            type="delivery_pending",
            field="delivery_id",
        ) from None
    if rec is None:
        raise ApiException(404, f"delivery {delivery_id} not found", type="not_found", field="delivery_id")
    return as_json(delivery_view(rec))
