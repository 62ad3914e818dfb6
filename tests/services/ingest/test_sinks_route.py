"""GET /v1/sinks: each sink with its delivery state; a tenant sees the sinks scoped to it and
nothing of the others'; credentials and URL queries are never shown."""

from __future__ import annotations

import httpx
import pytest

from services.ingest.app import create_app
from shared.catalog.models import parse_models
from shared.redis.keys import SinkField
from tests.services.ingest.test_tenancy import KEY_A, KEY_B, make_api

MODELS = """
[models.m]
engine = "dummy"

[sinks.everything]
kind = "http"
url = "https://bus.example/in?token=sekret"
headers_env = { Authorization = "BUS_AUTH" }

[sinks.acme-events]
kind = "nats"
servers = ["nats://n1:4222", "nats://n2:4222"]
subject = "acme.{type}"
tenants = ["acme"]
types = ["job.completed", "job.failed"]
"""


@pytest.fixture
async def clients(r, settings):
    app = make_api(settings, parse_models(MODELS))  # keys of tenants acme and beta
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(
                transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {KEY_A}"}
            ) as a,
            httpx.AsyncClient(
                transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {KEY_B}"}
            ) as b,
        ):
            yield a, b


async def test_a_tenant_sees_only_the_sinks_scoped_to_it(clients, r, keys):
    a, b = clients
    await r.xadd(keys.events_stream, {"type": "job.completed", "job": "j", "event": "{}"})
    await r.xadd(keys.events_stream, {"type": "job.completed", "job": "j", "event": "{}"})
    await r.hset(
        keys.sink("acme-events"),
        mapping={
            SinkField.CURSOR: "1-0",
            SinkField.SEEN: 1,
            SinkField.DELIVERED: 1,
            SinkField.LOST: 0,
            SinkField.REJECTED: 0,
        },
    )
    await r.hset(
        keys.sink("acme-events"),
        mapping={SinkField.ERROR: "HTTP 503 from the receiver", SinkField.ERROR_MS: 1_700_000_000_000},
    )
    resp = await a.get("/v1/sinks")
    assert resp.status_code == 200
    [sink] = resp.json()["data"]
    assert sink["name"] == "acme-events" and sink["kind"] == "nats" and sink["subject"] == "acme.{type}"
    assert sink["target"] == "nats://n1:4222,nats://n2:4222" and sink["tenants"] == ["acme"]
    assert (sink["delivered"], sink["lag"], sink["lost"]) == (1, 1, 0)
    assert (sink["last_error"], sink["last_error_at"], sink["delivering"]) == (
        "HTTP 503 from the receiver",
        1_700_000_000,
        False,
    )
    assert (await b.get("/v1/sinks")).json()["data"] == []


async def test_with_auth_off_every_sink_is_shown_without_its_secrets(r, keys, settings):
    app = create_app(settings, parse_models(MODELS))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            await r.xadd(keys.events_stream, {"type": "job.completed", "job": "j", "event": "{}"})
            resp = await client.get("/v1/sinks")
    assert resp.status_code == 200
    data = {s["name"]: s for s in resp.json()["data"]}
    assert sorted(data) == ["acme-events", "everything"]
    every = data["everything"]
    assert every["target"] == "https://bus.example/in?..." and "sekret" not in resp.text and "BUS_AUTH" not in resp.text
    # not started yet: no cursor, and the events it will start from (earliest) are its lag
    assert (every["cursor"], every["lag"], every["delivered"], every["mode"]) == (None, 1, 0, "structured")
