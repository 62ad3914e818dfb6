"""Every list route answers one page shape and pages the caller's own items only: across pages each
item comes exactly once, in the documented order; the last page says so; another tenant's items
never show and never leave a page short; a bad `limit` or `after` is a 422 naming it."""

from __future__ import annotations

import json
import time

import httpx
import msgspec
import openai
import pytest

from services.ingest.app import create_app
from shared.core.ids import delivery_id
from shared.core.pages import DEFAULT_LIMIT, MAX_LIMIT
from shared.lanes.dead_letters import META_FIELD, apply_retention, meta
from shared.redis.keys import PAYLOAD_FIELD
from shared.redis.streams import ensure_group
from shared.webhooks.records import DeliveryRecord
from shared.webhooks.store import WebhookStore
from shared.wire.api import DeadLetter
from tests.services.ingest.test_api import api  # noqa: F401  (the in-process API fixture, auth off)

KEY_A = "acme-key-0123456789abcdef"
KEY_B = "beta-key-0123456789abcdef"
LINE = json.dumps(
    {
        "custom_id": "c0",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]},
    }
)


@pytest.fixture
async def app(r, settings, models):
    settings = msgspec.structs.replace(settings, auth="on", api_keys=f"acme:{KEY_A},beta:{KEY_B}")
    app = create_app(settings, models)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def tenants(app):
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {KEY_A}"}) as a,
        httpx.AsyncClient(transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {KEY_B}"}) as b,
    ):
        yield a, b


async def every_page(client: httpx.AsyncClient, path: str, limit: int) -> list[list[str]]:
    """The ids of each page, following `next_cursor`; checks the shape of every page on the way."""
    pages: list[list[str]] = []
    params: dict[str, str | int] = {"limit": limit}
    while True:
        resp = await client.get(path, params=params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["object"] == "list"
        ids = [item["id"] for item in body["data"]]
        pages.append(ids)
        if not body["has_more"]:
            assert body["next_cursor"] is None and len(ids) <= limit
            return pages
        assert len(ids) == limit and body["next_cursor"] == ids[-1]  # never a short page before the last
        params["after"] = body["next_cursor"]


def flat(pages: list[list[str]]) -> list[str]:
    return [i for page in pages for i in page]


async def _job(client: httpx.AsyncClient) -> str:
    resp = await client.post("/v1/jobs", json={"requests": [{"model": "alpha", "prompt": "hi"}]})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


async def _dead(r, keys, **fields) -> str:
    info = DeadLetter(source=keys.results_stream, reason="max_attempts_exceeded", **fields)
    return (await r.xadd(keys.dead_letter_stream, {PAYLOAD_FIELD: b"x", META_FIELD: meta(info)})).decode()


async def test_dead_letters_are_paged_by_tenant_oldest_first(tenants, r, keys):
    a, b = tenants
    job_a, job_b = await _job(a), await _job(b)
    hook_a = (await a.post("/v1/webhooks", json={"url": "https://93.184.216.34/a"})).json()["id"]
    mine, theirs = [], []
    for n in range(7):
        for _ in range(12):  # twelve of B's between each two of A's: a filter after paging would leave A empty pages
            theirs.append(await _dead(r, keys, job_id=job_b))
        if n == 3:
            mine.append(await _dead(r, keys, webhook_id=hook_a, delivery_id="msg_" + "0" * 26))
        else:
            mine.append(await _dead(r, keys, job_id=job_a, request_id=f"req_{n}"))
    await _dead(r, keys)  # names no job nor endpoint: nobody's, with auth on

    pages = await every_page(a, "/v1/dead-letters", 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert flat(pages) == mine
    assert flat(await every_page(b, "/v1/dead-letters", 10)) == theirs
    later = await _dead(r, keys, job_id=job_a)  # written after the listing began: the next listing has it
    assert flat(await every_page(a, "/v1/dead-letters", MAX_LIMIT)) == [*mine, later]


async def test_with_auth_off_unattributed_dead_letters_are_listed_in_order(api, r, keys):  # noqa: F811
    job = (await api.post("/v1/jobs", json={"requests": [{"model": "alpha", "prompt": "hi"}]})).json()["id"]
    ids = []
    for n in range(5):
        ids.append(await _dead(r, keys, job_id=job) if n % 2 else await _dead(r, keys))
    assert flat(await every_page(api, "/v1/dead-letters", 2)) == ids


async def test_retention_drops_dead_letters_from_the_tenant_indexes_too(tenants, r, keys):
    a, _ = tenants
    job_a = await _job(a)
    ids = [await _dead(r, keys, job_id=job_a) for _ in range(6)]
    await _dead(r, keys)
    assert flat(await every_page(a, "/v1/dead-letters", 4)) == ids
    await apply_retention(r, keys, max_age_s=3600, maxlen=3, now_ms=int(time.time() * 1000))
    assert await r.zcard(keys.dead_letter_index("acme")) == 2  # trimmed with the stream, not at the next listing
    assert await r.zcard(keys.dead_letters_unattributed) == 1
    assert flat(await every_page(a, "/v1/dead-letters", 4)) == ids[-2:]

    await apply_retention(r, keys, max_age_s=0, maxlen=100, now_ms=int(time.time() * 1000) + 1000)
    assert flat(await every_page(a, "/v1/dead-letters", 4)) == []
    assert await r.exists(keys.dead_letter_index("acme"), keys.dead_letters_unattributed) == 0
    assert await r.smembers(keys.dead_letter_tenants) == set()


async def _upload(client: httpx.AsyncClient) -> str:
    resp = await client.post("/v1/files", files={"file": ("in.jsonl", LINE.encode())}, data={"purpose": "batch"})
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


async def test_files_and_batches_are_paged_newest_first_in_the_openai_shape(tenants):
    a, b = tenants
    files = [await _upload(a)]
    await _upload(b)
    batches = []
    for _ in range(4):
        files.append(await _upload(a))
        body = {"input_file_id": files[-1], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        batches.append((await a.post("/v1/batches", json=body)).json()["id"])
        await b.post("/v1/batches", json={**body, "input_file_id": await _upload(b)})

    for path, created in (("/v1/files", files), ("/v1/batches", batches)):
        pages = await every_page(a, path, 2)
        assert flat(pages) == created[::-1], path
        first = (await a.get(path, params={"limit": 2})).json()
        assert (first["first_id"], first["last_id"], first["has_more"]) == (created[-1], created[-2], True)
        last = (await a.get(path, params={"limit": 2, "after": created[1]})).json()
        assert (last["data"][0]["id"], last["first_id"], last["last_id"]) == (created[0], created[0], created[0])
        assert (last["has_more"], last["next_cursor"]) == (False, None)
        assert len(flat(await every_page(b, path, 3))) == len(created)


async def test_a_page_continues_after_its_cursor_item_was_deleted(tenants):
    a, _ = tenants
    files = [await _upload(a) for _ in range(5)]
    first = (await a.get("/v1/files", params={"limit": 2})).json()
    assert [f["id"] for f in first["data"]] == files[:-3:-1]
    assert (await a.delete(f"/v1/files/{first['next_cursor']}")).status_code == 200
    rest = (await a.get("/v1/files", params={"limit": 5, "after": first["next_cursor"]})).json()
    assert [f["id"] for f in rest["data"]] == files[2::-1] and rest["has_more"] is False


async def test_the_openai_sdk_pages_through_files_and_batches(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        client = openai.AsyncOpenAI(base_url="http://t/v1", api_key=KEY_A, http_client=http, max_retries=0)
        uploaded = []
        for n in range(5):
            f = await client.files.create(file=(f"in{n}.jsonl", LINE.encode()), purpose="batch")
            uploaded.append(f.id)
        batches = []
        for file_id in uploaded[:3]:
            batch = await client.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            batches.append(batch.id)
        assert [f.id async for f in client.files.list(limit=2)] == uploaded[::-1]
        assert [x.id async for x in client.batches.list(limit=2)] == batches[::-1]
        page = await client.batches.list(limit=2)
        assert page.has_more is True and [x.id for x in page.data] == batches[:0:-1]


async def test_webhook_endpoints_are_paged_oldest_first(tenants):
    a, b = tenants
    mine = []
    for n in range(5):
        mine.append((await a.post("/v1/webhooks", json={"url": f"https://93.184.216.34/{n}"})).json()["id"])
        await b.post("/v1/webhooks", json={"url": f"https://93.184.216.34/b{n}"})
    assert flat(await every_page(a, "/v1/webhooks", 2)) == mine
    assert len(flat(await every_page(b, "/v1/webhooks", 2))) == 5
    assert (await a.delete(f"/v1/webhooks/{mine[1]}")).status_code == 200  # the cursor's endpoint is gone
    rest = (await a.get("/v1/webhooks", params={"after": mine[1]})).json()
    assert [e["id"] for e in rest["data"]] == mine[2:]


async def test_deliveries_page_past_a_thousand_newest_first(tenants, app, r, keys):
    a, b = tenants
    endpoint = (await a.post("/v1/webhooks", json={"url": "https://93.184.216.34/x"})).json()["id"]
    other = (await b.post("/v1/webhooks", json={"url": "https://93.184.216.34/y"})).json()["id"]
    store: WebhookStore = app.state.webhooks
    await ensure_group(r, keys.webhook_events, "webhooks")
    base = int(time.time() * 1000)
    records = []
    for batch in range(7):  # 150 deliveries per fan-out share one creation time: ties are ordered too
        made = [_delivery(f"e{batch}-{n}", endpoint, base + batch) for n in range(150)]
        await store.fan_out(keys.webhook_events, "webhooks", [], made)
        records.extend(made)
    await store.fan_out(keys.webhook_events, "webhooks", [], [_delivery("x", other, base)])

    pages = await every_page(a, f"/v1/webhooks/{endpoint}/deliveries", MAX_LIMIT)
    got = flat(pages)
    assert len(pages) == 11 and sorted(got) == sorted(d.id for d in records) and len(set(got)) == 1050
    created = {d.id: d.created_at for d in records}
    assert [created[i] for i in got] == sorted(created.values(), reverse=True)
    assert flat(await every_page(b, f"/v1/webhooks/{other}/deliveries", 10)) == [delivery_id("x", other)]


def _delivery(event: str, endpoint: str, created_ms: int) -> DeliveryRecord:
    return DeliveryRecord(
        id=delivery_id(event, endpoint),
        endpoint_id=endpoint,
        event_type="job.completed",
        event_id=event,
        payload="{}",
        created_at=created_ms,
        next_attempt_at=created_ms,
    )


async def test_the_default_page_size_is_the_same_everywhere(tenants):
    a, _ = tenants
    files = [await _upload(a) for _ in range(DEFAULT_LIMIT + 1)]
    body = (await a.get("/v1/files")).json()
    assert [f["id"] for f in body["data"]] == files[:0:-1] and body["has_more"] is True


LIST_ROUTES = [  # each with the cursor of an item that would be its last (files and batches are newest first)
    ("/v1/files", "file-00000000000000000000000000"),
    ("/v1/batches", "batch_00000000000000000000000000"),
    ("/v1/webhooks", "wh_7" + "z" * 25),
    ("/v1/dead-letters", "9999999999999999999-0"),
]


@pytest.mark.parametrize("limit", ["0", str(MAX_LIMIT + 1), "-1", "ten"])
async def test_a_limit_out_of_range_is_a_422_naming_it(tenants, limit):
    a, _ = tenants
    endpoint = (await a.post("/v1/webhooks", json={"url": "https://93.184.216.34/x"})).json()["id"]
    for path in [p for p, _ in LIST_ROUTES] + [f"/v1/webhooks/{endpoint}/deliveries"]:
        resp = await a.get(path, params={"limit": limit})
        assert resp.status_code == 422 and resp.json()["error"]["field"] == "limit", (path, resp.text)


@pytest.mark.parametrize(
    "after", ["nope", "batch_x", "file-abc", "1-2-3", "99999999999999999999-0", "wh_ZZZZZZZZZZZZZZZZZZZZZZZZZZ"]
)
async def test_a_malformed_after_is_a_422_naming_it(tenants, after):
    a, _ = tenants
    endpoint = (await a.post("/v1/webhooks", json={"url": "https://93.184.216.34/x"})).json()["id"]
    for path in [p for p, _ in LIST_ROUTES] + [f"/v1/webhooks/{endpoint}/deliveries"]:
        resp = await a.get(path, params={"after": after})
        assert resp.status_code == 422 and resp.json()["error"]["field"] == "after", (path, after, resp.text)


async def test_a_delivery_cursor_the_endpoint_does_not_have_is_a_404_naming_after(tenants):
    a, _ = tenants
    endpoint = (await a.post("/v1/webhooks", json={"url": "https://93.184.216.34/x"})).json()["id"]
    resp = await a.get(f"/v1/webhooks/{endpoint}/deliveries", params={"after": "msg_" + "a" * 26})
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "after"


async def test_a_well_formed_cursor_past_every_item_ends_the_list(tenants, r, keys):
    a, _ = tenants
    body = {"input_file_id": await _upload(a), "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    assert (await a.post("/v1/batches", json=body)).status_code == 200
    assert (await a.post("/v1/webhooks", json={"url": "https://93.184.216.34/x"})).status_code == 201
    await _dead(r, keys, job_id=await _job(a))
    for path, cursor in LIST_ROUTES:
        assert len((await a.get(path)).json()["data"]) == 1, path
        body = (await a.get(path, params={"after": cursor})).json()
        assert body["data"] == [] and body["has_more"] is False and body["next_cursor"] is None, path
