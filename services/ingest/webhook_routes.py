"""/v1/webhooks: register endpoints that receive signed job events, rotate their secrets, and
see (and redo) their deliveries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import msgspec
from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import Response

from services.ingest import openapi
from services.ingest.body import read_limited
from services.ingest.errors import ApiException, decode_body
from shared.api import ApiError
from shared.keys import Keys
from shared.settings import Settings
from shared.url_guard import UnsafeURL, check_url
from shared.webhook_store import DeliveryPending, WebhookStore
from shared.webhooks import Delivery, DeliveryList, WebhookCreate, WebhookEndpoint, WebhookEndpointList, delivery_view, endpoint_view

_encoder = msgspec.json.Encoder()
_create_decoder = msgspec.json.Decoder(WebhookCreate)
WebhookId = Annotated[str, Path(pattern=r"^wh_[0-9a-z]{26}$", description="Webhook endpoint id")]
DeliveryId = Annotated[str, Path(pattern=r"^msg_[0-9a-f]{26}$", description="Delivery id (the webhook-id header)")]
_ERRORS = {
    404: openapi.json_response(ApiError, "Not found"),
    422: openapi.json_response(ApiError, "Invalid field; `error.field` names it"),
}


def _json(obj, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")


async def checked_url(url: str, settings: Settings, field: str) -> None:
    """422 naming the field when the URL is not one inferq may call."""
    try:
        await check_url(url, allow_private=settings.webhook_allow_private, allow_http=settings.webhook_allow_http)
    except UnsafeURL as exc:
        raise ApiException(422, f"{field}: {exc}", type="invalid_webhook_url", field=field) from None


def install(app: FastAPI, settings: Settings, keys: Keys, tenant_of: Callable[[Request], str]) -> None:
    def store(request: Request) -> WebhookStore:
        return request.app.state.webhooks

    def not_found(endpoint_id: str) -> ApiException:
        return ApiException(404, f"webhook endpoint {endpoint_id} not found", type="not_found", field="webhook_id")

    @app.post("/v1/webhooks", status_code=201, response_class=Response, summary="Register a webhook endpoint",
              description="Events are signed per Standard Webhooks with the returned `secret` (shown only now and on rotation). "
                          "URLs must be https and must not resolve to private, loopback or link-local addresses.",
              openapi_extra=openapi.json_body(WebhookCreate),
              responses={201: openapi.json_response(WebhookEndpoint, "Created, with its secret"), **_ERRORS})
    async def create_webhook(request: Request) -> Response:
        body = await read_limited(request, 64 * 1024)
        spec = decode_body(_create_decoder, body)
        await checked_url(spec.url, settings, "url")
        rec = await store(request).create(tenant_of(request), spec)
        return _json(endpoint_view(rec, with_secret=True), 201)

    @app.get("/v1/webhooks", response_class=Response, summary="List webhook endpoints",
             responses={200: openapi.json_response(WebhookEndpointList, "Endpoints, oldest first")})
    async def list_webhooks(request: Request) -> Response:
        return _json(WebhookEndpointList(data=[endpoint_view(r) for r in await store(request).list(tenant_of(request))]))

    @app.get("/v1/webhooks/{webhook_id}", response_class=Response, summary="Get a webhook endpoint",
             responses={200: openapi.json_response(WebhookEndpoint, "The endpoint"), **_ERRORS})
    async def get_webhook(request: Request, webhook_id: WebhookId) -> Response:
        rec = await store(request).get(webhook_id, tenant_of(request))
        if rec is None:
            raise not_found(webhook_id)
        return _json(endpoint_view(rec))

    @app.delete("/v1/webhooks/{webhook_id}", response_class=Response, summary="Delete a webhook endpoint",
                description="Pending deliveries to it end `endpoint_disabled`.",
                responses={200: openapi.json_response(WebhookEndpoint, "The deleted endpoint"), **_ERRORS})
    async def delete_webhook(request: Request, webhook_id: WebhookId) -> Response:
        rec = await store(request).get(webhook_id, tenant_of(request))
        if rec is None or not await store(request).delete(tenant_of(request), webhook_id):
            raise not_found(webhook_id)
        return _json(endpoint_view(rec))

    @app.post("/v1/webhooks/{webhook_id}/rotate", response_class=Response, summary="Rotate the signing secret",
              description="Returns the new secret. For 24 hours events carry signatures with both the old and the new secret.",
              responses={200: openapi.json_response(WebhookEndpoint, "The endpoint with its new secret"), **_ERRORS})
    async def rotate_webhook(request: Request, webhook_id: WebhookId) -> Response:
        rec = await store(request).rotate(tenant_of(request), webhook_id)
        if rec is None:
            raise not_found(webhook_id)
        return _json(endpoint_view(rec, with_secret=True))

    @app.get("/v1/webhooks/{webhook_id}/deliveries", response_class=Response, summary="Deliveries to an endpoint",
             responses={200: openapi.json_response(DeliveryList, "Newest first, with every attempt"), **_ERRORS})
    async def list_deliveries(request: Request, webhook_id: WebhookId,
                              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
        if await store(request).get(webhook_id, tenant_of(request)) is None:
            raise not_found(webhook_id)
        records = await store(request).list_deliveries(webhook_id, limit)
        return _json(DeliveryList(data=[delivery_view(d) for d in records]))

    @app.post("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", response_class=Response,
              summary="Send a delivery again", description="Schedules a new attempt now, with the same webhook-id.",
              responses={200: openapi.json_response(Delivery, "The delivery, pending again"),
                         409: openapi.json_response(ApiError, "The endpoint is disabled, or the delivery is still pending"), **_ERRORS})
    async def redeliver(request: Request, webhook_id: WebhookId, delivery_id: DeliveryId) -> Response:
        endpoint = await store(request).get(webhook_id, tenant_of(request))
        if endpoint is None:
            raise not_found(webhook_id)
        if endpoint.status != "enabled":
            raise ApiException(409, f"webhook endpoint {webhook_id} is disabled ({endpoint.disabled_reason})",
                               type="endpoint_disabled", field="webhook_id")
        try:
            rec = await store(request).redeliver(webhook_id, delivery_id)
        except DeliveryPending as exc:
            due = exc.rec.next_attempt_at
            raise ApiException(409, f"delivery {delivery_id} is pending: its next attempt is scheduled"
                                    + (f" for {due} (Unix ms)" if due else ""), type="delivery_pending", field="delivery_id") from None
        if rec is None:
            raise ApiException(404, f"delivery {delivery_id} not found", type="not_found", field="delivery_id")
        return _json(delivery_view(rec))
