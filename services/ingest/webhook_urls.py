"""A webhook URL is checked when it is registered (here) and again before every delivery."""

from __future__ import annotations

from services.ingest.errors.client import ApiException
from shared.core.errors import UnsafeURL
from shared.core.settings import Settings
from shared.webhooks.url_guard import check_url


async def checked_url(url: str, settings: Settings, field: str) -> None:
    """422 naming the field when the URL is not one inferq may call."""
    try:
        await check_url(url, allow_private=settings.webhook_allow_private, allow_http=settings.webhook_allow_http)
    except UnsafeURL as exc:
        raise ApiException(422, f"{field}: {exc}", type="invalid_webhook_url", field=field) from None
