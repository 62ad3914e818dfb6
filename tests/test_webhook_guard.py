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
    ("https://example.com:99999/hook", "malformed"),
    ("https://[::1/hook", "malformed"),
    ("https://93.184.216.34:0/hook", "port 0"),
    ("https://a..b/hook", "does not resolve"),
]


@pytest.mark.parametrize("url,why", REFUSED)
async def test_refused_by_default(url, why):
    with pytest.raises(UnsafeURL, match=why):
        await check_url(url, allow_private=False, allow_http=False)


def test_a_checked_address_is_pinned_with_the_name_kept_for_host_and_tls():
    import ipaddress

    from shared.url_guard import pin

    t = pin("https://hooks.example.com:8443/in?x=1", ipaddress.ip_address("93.184.216.34"))
    assert t == ("https://93.184.216.34:8443/in?x=1", "hooks.example.com:8443", "hooks.example.com")
    t = pin("https://hooks.example.com/in", ipaddress.ip_address("2606:2800:220:1::1"))
    assert t == ("https://[2606:2800:220:1::1]/in", "hooks.example.com", "hooks.example.com")


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


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x",
        "https://10.0.0.7/x",
        "https://169.254.169.254/x",
        "https://localhost/x",
        "https://example.com:99999/x",
        "https://[::1/x",
    ],
)
async def test_api_refuses_private_urls_with_the_field_named(api, url):
    resp = await api.post("/v1/webhooks", json={"url": url})
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["field"] == "url" and ("private networks" in err["message"] or "malformed" in err["message"])
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
    await store.fan_out(
        keys.events_stream,
        "webhooks",
        [],
        [
            DeliveryRecord(
                id="msg_0123456789abcdef0123456789",
                endpoint_id=endpoint.id,
                event_type="job.completed",
                event_id="e1",
                payload="{}",
                created_at=0,
                next_attempt_at=0,
            )
        ],
    )
    calls = []

    class NoNetwork:
        async def post(self, *a, **kw):
            calls.append(a)
            raise AssertionError("must not be called")

    ctx = {
        "webhooks": store,
        "keys": keys,
        "http": NoNetwork(),
        "settings": msgspec.structs.replace(settings, webhook_retry_schedule="0"),
    }
    assert await deliver_webhook(ctx, "msg_0123456789abcdef0123456789") == "dead_lettered"
    rec = await store.get_delivery("msg_0123456789abcdef0123456789")
    assert calls == [] and rec.attempts[0].error.startswith("refused: localhost resolves to 127.0.0.1")


async def test_an_unexpected_failure_is_a_failed_attempt_not_a_stalled_delivery(r, keys, settings):
    from shared.errors import DeliveryPending

    store = WebhookStore(r, keys)
    endpoint = await store.create("default", WebhookCreate(url="https://93.184.216.34/hook"))
    did = "msg_abcdef0123456789abcdef0123"
    await store.fan_out(
        keys.events_stream,
        "webhooks",
        [],
        [
            DeliveryRecord(
                id=did,
                endpoint_id=endpoint.id,
                event_type="job.completed",
                event_id="e2",
                payload="{}",
                created_at=0,
                next_attempt_at=0,
            )
        ],
    )

    class Broken:
        async def post(self, *a, **kw):
            raise OverflowError("port out of range")

    ctx = {
        "webhooks": store,
        "keys": keys,
        "http": Broken(),
        "settings": msgspec.structs.replace(settings, webhook_retry_schedule="0,30"),
    }
    assert await deliver_webhook(ctx, did) == "pending"
    rec = await store.get_delivery(did)
    assert rec.attempts[0].error == "OverflowError: port out of range" and rec.next_attempt_at is not None
    assert await r.zscore(keys.webhook_due, did) == rec.next_attempt_at  # scheduled again
    with pytest.raises(DeliveryPending):  # a pending delivery is not redelivered on top of itself
        await store.redeliver(endpoint.id, did)


async def test_a_handed_out_delivery_falls_due_again_if_its_attempt_dies(r, keys):
    store = WebhookStore(r, keys)
    await r.zadd(keys.webhook_due, {"msg_x": 1000})
    assert await store.due(5000) == [("msg_x", 1000)]
    await store.taken("msg_x", 1000, lease_ms=60_000)
    assert await store.due(5000) == []  # leased while its attempt runs
    assert await store.due(61_000) == [("msg_x", 61_000)]  # the attempt never reported: due again
