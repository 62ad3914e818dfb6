"""Each tenant's uploaded files count against a byte and a file-count quota until they are deleted or
expire: over it, an upload is refused (413 alone too large, 429 used up) with the quota named."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest

from services.ingest.app import create_app

BYTES, FILES = 1000, 3


@pytest.fixture
async def api(r, settings, models):
    settings = msgspec.structs.replace(settings, tenant_file_bytes=BYTES, tenant_files=FILES, job_ttl_s=2)
    app = create_app(settings, models)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client


async def _upload(api: httpx.AsyncClient, size: int) -> httpx.Response:
    return await api.post("/v1/files", files={"file": ("in.jsonl", b"x" * size)}, data={"purpose": "batch"})


async def test_a_file_larger_than_the_whole_byte_quota_is_a_413_naming_it(api):
    await _upload(api, 300)
    resp = await _upload(api, BYTES + 1)
    assert resp.status_code == 413
    error = resp.json()["error"]
    assert (error["type"], error["quota"], error["limit"], error["used"]) == (
        "quota_exceeded",
        "INFERQ_TENANT_FILE_BYTES",
        BYTES,
        300,
    )
    assert error["field"] == "file" and "INFERQ_TENANT_FILE_BYTES" in error["message"]


async def test_bytes_used_up_is_a_429_naming_the_quota_and_usage(api):
    assert (await _upload(api, 600)).status_code == 200
    resp = await _upload(api, 500)
    assert resp.status_code == 429
    error = resp.json()["error"]
    assert (error["quota"], error["limit"], error["used"]) == ("INFERQ_TENANT_FILE_BYTES", BYTES, 600)
    assert (await _upload(api, 400)).status_code == 200  # exactly what is left still fits


async def test_file_count_used_up_is_a_429_naming_the_quota(api):
    for _ in range(FILES):
        assert (await _upload(api, 10)).status_code == 200
    resp = await _upload(api, 10)
    assert resp.status_code == 429
    error = resp.json()["error"]
    assert (error["quota"], error["limit"], error["used"]) == ("INFERQ_TENANT_FILES", FILES, FILES)


async def test_a_refused_upload_writes_nothing(api, r, keys):
    first = (await _upload(api, 900)).json()["id"]
    assert (await _upload(api, 200)).status_code == 429
    assert [m.decode() for m in await r.zrange(keys.files_index("default"), 0, -1)] == [first]
    assert await r.hkeys(keys.file_usage("default")) == [first.encode()]


async def test_deleting_a_file_gives_its_bytes_back(api):
    first = (await _upload(api, 800)).json()["id"]
    assert (await _upload(api, 300)).status_code == 429
    assert (await api.delete(f"/v1/files/{first}")).status_code == 200
    assert (await _upload(api, 300)).status_code == 200


async def test_an_expired_file_gives_its_bytes_back_and_leaves_the_index(api, r, keys):
    first = (await _upload(api, 800)).json()["id"]
    assert (await _upload(api, 300)).status_code == 429
    await asyncio.sleep(3.1)  # job_ttl_s = 2: the file expires
    assert (await api.get(f"/v1/files/{first}")).status_code == 404
    second = await _upload(api, 300)
    assert second.status_code == 200
    assert [m.decode() for m in await r.zrange(keys.files_index("default"), 0, -1)] == [second.json()["id"]]


async def test_quotas_are_per_tenant(r, redis_server, models_file, models):
    from shared.core.settings import Settings

    settings = Settings(
        redis_url=redis_server.url,
        models_path=str(models_file),
        api_keys="acme:key-acme-0123456789,zeta:key-zeta-0123456789",
        tenant_file_bytes=BYTES,
    )
    app = create_app(settings, models)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:

            async def upload(key: str) -> int:
                resp = await client.post(
                    "/v1/files",
                    files={"file": ("in.jsonl", b"x" * 700)},
                    data={"purpose": "batch"},
                    headers={"authorization": f"Bearer {key}"},
                )
                return resp.status_code

            assert await upload("key-acme-0123456789") == 200
            assert await upload("key-acme-0123456789") == 429
            assert await upload("key-zeta-0123456789") == 200


async def test_the_openapi_document_lists_the_quota_answers(api):
    spec = (await api.get("/openapi.json")).json()
    answers = spec["paths"]["/v1/files"]["post"]["responses"]
    assert "quota" in answers["413"]["description"] and "quota" in answers["429"]["description"]
    error_fields = spec["components"]["schemas"]["ApiErrorBody"]["properties"]
    assert {"quota", "limit", "used"} <= set(error_fields)
