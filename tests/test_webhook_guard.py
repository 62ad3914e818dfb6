"""SSRF protection: webhook URLs that reach private networks are refused by default, at
registration and again at delivery time."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from services.dispatcher.webhook_delivery import deliver_webhook
from services.ingest.app import create_app
from shared.url_guard import UnsafeURL, check_url
from shared.webhook_store import WebhookStore
from shared.webhooks import DeliveryRecord, WebhookCreate

REFUSED = [
    ("https://127.0.0.1/hook", "loopback"),
    ("https://10.1.2.3/hook", "private"),
    ("https://192.168.0.10/hook", "private"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://localhost:8443/hook", "loopback"),  # a hostname that resolves to 127.0.0.1
    ("https://[::1]/hook", "loopback"),
    ("https://[::ffff:10.0.0.1]/hook", "private"),
    ("https://100.64.1.1/hook", "shared"),
    ("https://metadata.google.internal/computeMetadata", "metadata"),
    ("http://93.184.216.34/hook", "https"),
    ("ftp://93.184.216.34/hook", "https"),
    ("https://user:pw@93.184.216.34/hook", "credentials"),
]


@pytest.mark.parametrize("url,why", REFUSED)
async def test_refused_by_default(url, why):
    with pytest.raises(UnsafeURL, match=why):
        await check_url(url, allow_private=False, allow_http=False)


async def test_public_https_literal_and_explicit_opt_ins_pass():
    await check_url("https://93.184.216.34/hook", allow_private=False, allow_http=False)
    await check_url("https://127.0.0.1/hook", allow_private=True, allow_http=False)
    await check_url("http://127.0.0.1/hook", allow_private=True, allow_http=True)


@pytest.fixture
async def api(r, settings, models):
    app = create_app(settings, models)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client


@pytest.mark.parametrize("url", ["https://127.0.0.1/x", "https://10.0.0.7/x", "https://169.254.169.254/x", "https://localhost/x"])
async def test_api_refuses_private_urls_with_the_field_named(api, url):
    resp = await api.post("/v1/webhooks", json={"url": url})
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["field"] == "url" and "private networks" in err["message"]
    resp = await api.post("/v1/jobs", json={"requests": [{"model": "alpha", "prompt": "x"}], "webhook": {"url": url}})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "webhook.url"
    assert (await api.get("/v1/webhooks")).json()["data"] == []


async def test_bad_webhook_bodies_are_422_naming_the_field(api):
    resp = await api.post("/v1/webhooks", json={"url": "https://93.184.216.34/x", "events": ["job.exploded"]})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "events[0]"
    resp = await api.post("/v1/webhooks", json={"events": ["job.completed"]})
    assert resp.status_code == 422 and "url" in resp.json()["error"]["message"]
    resp = await api.get("/v1/webhooks/wh_00000000000000000000000000/deliveries")
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "webhook_id"


async def test_delivery_rechecks_the_address(r, keys, settings):
    """An endpoint stored while private addresses were allowed (or whose name now resolves to
    one) is not called once they are not: the attempt fails as refused."""
    store = WebhookStore(r, keys)
    endpoint = await store.create("default", WebhookCreate(url="https://localhost:9/hook"))
    await store.fan_out(keys.events_stream, "webhooks", [], [DeliveryRecord(
        id="msg_0123456789abcdef0123456789", endpoint_id=endpoint.id, event_type="job.completed", event_id="e1",
        payload="{}", created_at=0, next_attempt_at=0)])
    calls = []

    class NoNetwork:
        async def post(self, *a, **kw):
            calls.append(a)
            raise AssertionError("must not be called")

    ctx = {"webhooks": store, "keys": keys, "http": NoNetwork(),
           "settings": msgspec.structs.replace(settings, webhook_retry_schedule="0")}
    assert await deliver_webhook(ctx, "msg_0123456789abcdef0123456789") == "dead_lettered"
    rec = await store.get_delivery("msg_0123456789abcdef0123456789")
    assert calls == [] and rec.attempts[0].error.startswith("refused: localhost resolves to 127.0.0.1")
