"""The HTTP API in-process (ASGI) against a real Redis: validation, job creation, reads."""

from __future__ import annotations

import asyncio
import json

import httpx
import msgspec
import pytest

from services.ingest.app import create_app
from shared.redis.keys import PAYLOAD_FIELD
from shared.wire.messages import chunk_decoder, request_decoder
from tests.support.accepted import accepted, entries_written


@pytest.fixture
async def api(r, settings, models):
    settings = msgspec.structs.replace(settings, max_requests_per_job=20, max_body_bytes=64 * 1024)
    app = create_app(settings, models)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client


def _ok(**extra):
    return {"model": "alpha", "prompt": "hello", **extra}


BAD_INPUTS = [
    # (name, body bytes or json, status, field, index, message fragment)
    ("malformed json", b'{"requests": [', 400, "body", None, "malformed JSON"),
    ("not an object", b"[]", 422, None, None, "Expected `object`, got `array`"),
    (
        "unknown model",
        {"requests": [_ok(), _ok(model="nope")]},
        422,
        "requests[1].model",
        1,
        "unknown model 'nope'; known models: alpha, beta, gamma",
    ),
    (
        "neither prompt nor messages",
        {"requests": [{"model": "alpha"}]},
        422,
        "requests[0].prompt",
        0,
        "exactly one of `prompt` or `messages`",
    ),
    (
        "both prompt and messages",
        {"requests": [_ok(), _ok(messages=[{"role": "user", "content": "x"}])]},
        422,
        "requests[1].prompt",
        1,
        "not both",
    ),
    ("wrong type", {"requests": [_ok(), _ok(), _ok(max_tokens="ten")]}, 422, "requests[2].max_tokens", 2, "got `str`"),
    ("max_tokens below 1", {"requests": [_ok(max_tokens=0)]}, 422, "requests[0].max_tokens", 0, ">= 1"),
    (
        "max_tokens above model limit",
        {"requests": [_ok(model="gamma", max_tokens=101)]},
        422,
        "requests[0].max_tokens",
        0,
        "exceeds the limit of 100",
    ),
    ("temperature out of range", {"requests": [_ok(temperature=3.5)]}, 422, "requests[0].temperature", 0, "<= 2.0"),
    (
        "bad role",
        {"requests": [{"model": "alpha", "messages": [{"role": "robot", "content": "x"}]}]},
        422,
        "requests[0].messages[0].role",
        0,
        "Invalid enum value 'robot'",
    ),
    (
        "unknown request field",
        {"requests": [_ok(max_token=5)]},
        422,
        "requests[0].max_token",
        0,
        "unknown field `max_token`",
    ),
    (
        "duplicate custom_id",
        {"requests": [_ok(custom_id="a"), _ok(custom_id="b"), _ok(custom_id="a")]},
        422,
        "requests[2].custom_id",
        2,
        "duplicate custom_id 'a' (also used by requests[0])",
    ),
    ("empty list", {"requests": []}, 422, "requests", None, "length >= 1"),
    ("no requests at all", {"metadata": {}}, 422, "requests", None, "must contain a `requests` list"),
    (
        "requests and prompts",
        {"requests": [_ok()], "prompts": [{"model": "alpha", "prompt": "x"}]},
        422,
        "requests",
        None,
        "not both",
    ),
    (
        "prompts shape missing prompt",
        {"prompts": [{"id": "p1", "model": "alpha"}]},
        422,
        "prompts[0].prompt",
        0,
        "missing required field `prompt`",
    ),
    (
        "prompts shape unknown model",
        {"prompts": [{"id": "p1", "model": "zeta", "prompt": "x"}]},
        422,
        "prompts[0].model",
        0,
        "unknown model 'zeta'",
    ),
    (
        "metadata value not a string",
        {"requests": [_ok()], "metadata": {"k": 1}},
        422,
        "metadata[...]",
        None,
        "Expected `str`, got `int`",
    ),
    (
        "over the per-job limit",
        {"requests": [_ok() for _ in range(21)]},
        413,
        "requests",
        None,
        "the job has 21 requests; the limit is 20",
    ),
    (
        "over the body limit",
        {"requests": [_ok(prompt="x" * 70_000)]},
        413,
        "body",
        None,
        "larger than the limit of 65536 bytes",
    ),
]


@pytest.mark.parametrize("name, body, status, field, index, fragment", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
async def test_bad_input_is_rejected_and_writes_nothing(api, r, name, body, status, field, index, fragment):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await api.post("/v1/jobs", content=content, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert fragment in err["message"]
    assert err.get("field") == field
    assert err.get("index") == index
    if field and field != "body":
        assert err["message"].startswith(field)
    assert await r.dbsize() == 0, "a rejected submission must write nothing to Redis"


async def test_unknown_model_lists_known_models(api):
    resp = await api.post("/v1/jobs", json={"requests": [_ok(model="llama")]})
    assert resp.json()["error"]["known_models"] == ["alpha", "beta", "gamma"]


async def test_accepted_job_is_queued_with_counts(api, r, keys):
    body = {
        "requests": [
            _ok(custom_id="first", max_tokens=5, temperature=0.2, top_p=0.9, stop="END", seed=7),
            {"model": "beta", "messages": [{"role": "user", "content": "hi"}]},
            _ok(model="beta"),
        ],
        "metadata": {"team": "search"},
    }
    resp = await api.post("/v1/jobs", json=body)
    assert resp.status_code == 202
    job = resp.json()
    assert job["id"].startswith("job_") and job["status"] == "queued"
    assert job["request_counts"] == {
        "total": 3,
        "queued": 3,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
        "expired": 0,
    }
    assert {m: c["total"] for m, c in job["models"].items()} == {"alpha": 1, "beta": 2}
    assert job["metadata"] == {"team": "search"}

    got = (await api.get(f"/v1/jobs/{job['id']}")).json()
    assert (
        got["status"] == "queued"
        and got["request_counts"] == job["request_counts"]
        and got["usage"]
        == {"prompt_tokens": 0, "completion_tokens": 0, "gpu_seconds": 0.0, "cost": 0.0, "by_model": {}}
    )

    # the lane streams had room: every request went straight to its model's stream, none via the router
    assert await r.xlen(keys.ingest_stream) == 0
    streams = [s for m in ("alpha", "beta") for s in keys.model_streams(m)]
    payloads = [f[PAYLOAD_FIELD.encode()] for s in streams for _, f in await r.xrange(s)]
    reqs = sorted((request_decoder.decode(p) for p in payloads), key=lambda q: int(q.request_id.rsplit("_", 1)[1]))
    assert {q.job_id for q in reqs} == {job["id"]} and [q.model for q in reqs] == ["alpha", "beta", "beta"]
    first = reqs[0]
    assert (
        first.custom_id == "first"
        and first.params.max_tokens == 5
        and first.params.stop == ["END"]
        and first.params.seed == 7
    )
    assert reqs[1].messages[0].content == "hi" and reqs[1].params.max_tokens == 256  # model default
    assert reqs[2].custom_id == reqs[2].request_id  # generated when absent
    assert len({q.request_id for q in reqs}) == 3


async def test_prompts_shape_maps_id_to_custom_id(api, r, keys):
    resp = await api.post(
        "/v1/jobs",
        json={"prompts": [{"id": "p-1", "model": "alpha", "prompt": "a"}, {"model": "gamma", "prompt": "b"}]},
    )
    assert resp.status_code == 202
    reqs = await accepted(r, keys)
    assert reqs[0].custom_id == "p-1" and reqs[0].prompt == "a"
    assert reqs[1].model == "gamma"


async def test_large_job_is_split_into_chunks_in_one_transaction(r, settings, models, keys):
    app = create_app(settings, models)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
            resp = await api.post("/v1/jobs", json={"requests": [_ok(custom_id=str(i)) for i in range(1234)]})
    assert resp.status_code == 202
    entries = await r.xrange(keys.ingest_stream)
    sizes = [len(chunk_decoder.decode(f[b"d"]).items) for _, f in entries]
    assert sizes and all(n <= 500 for n in sizes)  # what did not go straight to the lane stream
    reqs = await accepted(r, keys)
    assert [q.custom_id for q in reqs] == [str(i) for i in range(1234)]  # each exactly once, in order


async def test_unknown_job_is_404(api):
    resp = await api.get("/v1/jobs/job_0000000000000000000000000a")
    assert resp.status_code == 404 and "not found" in resp.json()["error"]["message"]
    resp = await api.get("/v1/jobs/job_0000000000000000000000000a/results")
    assert resp.status_code == 404


async def test_malformed_job_id_and_cursor_are_422(api):
    resp = await api.get("/v1/jobs/../etc")
    assert resp.status_code in (404, 422)
    resp = await api.get("/v1/jobs/notajob")
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "job_id"
    job = (await api.post("/v1/jobs", json={"requests": [_ok()]})).json()
    resp = await api.get(f"/v1/jobs/{job['id']}/results", params={"after": "yesterday"})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "after"
    resp = await api.get(f"/v1/jobs/{job['id']}/results", params={"limit": 0})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "limit"


async def test_results_of_a_queued_job_are_empty(api):
    job = (await api.post("/v1/jobs", json={"requests": [_ok()]})).json()
    resp = await api.get(f"/v1/jobs/{job['id']}/results")
    assert resp.status_code == 200 and resp.text == ""
    assert resp.headers["content-type"] == "application/x-ndjson"
    assert resp.headers["inferq-job-status"] == "queued"


async def test_models_health_and_readiness(api):
    models = (await api.get("/v1/models")).json()["data"]
    assert [m["id"] for m in models] == ["alpha", "beta", "gamma"]
    q = models[0]["queue"]
    assert (q["unfinished"], q["queued"], q["routed_unread"], q["pending"], q["consumers"], q["flow"]) == (
        0,
        0,
        0,
        0,
        0,
        "flowing",
    )
    assert q["high_watermark"] == 128 and q["low_watermark"] == 64  # automatic: 2 x max_inflight 64
    assert set(q["lanes"]) == {"interactive", "batch"}
    assert (await api.get("/healthz")).json() == {"status": "ok", "detail": None}
    assert (await api.get("/readyz")).status_code == 200


async def test_readyz_reports_unreachable_redis(settings, models):
    from inferq.localstack import free_port

    dead = msgspec.structs.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    app = create_app(dead, models)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
            resp = await api.get("/readyz")
    assert resp.status_code == 503 and resp.json()["status"] == "unavailable"


async def test_openapi_documents_msgspec_bodies(api):
    doc = (await api.get("/openapi.json")).json()
    post = doc["paths"]["/v1/jobs"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobCreate"}
    assert post["responses"]["202"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Job"}
    schemas = doc["components"]["schemas"]
    assert set(schemas["RequestSpec"]["properties"]) >= {
        "custom_id",
        "model",
        "prompt",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
    }
    results = doc["paths"]["/v1/jobs/{job_id}/results"]["get"]
    assert "application/x-ndjson" in results["responses"]["200"]["content"]
    # every reference resolves
    refs = {m for m in json.dumps(doc).split('"$ref": "')[1:]}
    for ref in refs:
        name = ref.split('"')[0].rsplit("/", 1)[-1]
        assert name in schemas, name


@pytest.mark.parametrize("cursor", ["99999999999999999999-0", "18446744073709551615-18446744073709551615", "1-", "-1"])
async def test_out_of_range_cursors_are_422_not_500(api, cursor):
    job = (await api.post("/v1/jobs", json={"requests": [_ok()]})).json()
    resp = await api.get(f"/v1/jobs/{job['id']}/results", params={"after": cursor})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "after"


@pytest.mark.parametrize("field, value", [("seed", 10**30), ("seed", -(10**30)), ("stop", ""), ("stop", [""])])
async def test_out_of_range_sampling_values_are_422_not_500(api, r, field, value):
    resp = await api.post("/v1/jobs", json={"requests": [_ok(**{field: value})]})
    assert resp.status_code == 422 and resp.json()["error"]["field"].startswith(f"requests[0].{field}")
    assert await r.dbsize() == 0


async def test_idempotency_key_returns_the_same_job_and_writes_once(api, r, keys):
    body = {"requests": [_ok(custom_id="a"), _ok(custom_id="b")], "metadata": {"run": "1"}}
    first = await api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-2026-11-22"})
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    again = await api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-2026-11-22"})
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(await accepted(r, keys)) == 2  # the replay wrote nothing

    changed = {**body, "metadata": {"run": "2"}}
    conflict = await api.post("/v1/jobs", json=changed, headers={"Idempotency-Key": "nightly-2026-11-22"})
    assert conflict.status_code == 409
    err = conflict.json()["error"]
    assert err["field"] == "Idempotency-Key" and first.json()["id"] in err["message"]

    other = await api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "another-key"})
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    assert (await api.post("/v1/jobs", json=body)).json()["id"] not in (first.json()["id"], other.json()["id"])


async def test_replaying_an_idempotency_key_whose_job_expired_is_a_409_naming_the_expiry(api, r, keys):
    body = {"requests": [_ok(custom_id="a")]}
    first = (await api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-2026-11-23"})).json()
    for key in keys.job_keys(first["id"]):  # the job's TTL passes; the key's 24 h have not
        await r.pexpire(key, 1)
    await asyncio.sleep(0.05)
    assert not await r.exists(keys.job(first["id"])) and await r.exists(
        keys.idempotency("default", "nightly-2026-11-23")
    )
    written = (await entries_written(r, keys), await r.get(keys.backlog_total))

    replay = await api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-2026-11-23"})
    assert replay.status_code == 409 and "idempotent-replayed" not in replay.headers
    assert replay.json()["error"] == {
        "message": f"Idempotency-Key: the job this Idempotency-Key created, {first['id']}, has expired; use a new key",
        "type": "idempotency_key_expired_job",
        "field": "Idempotency-Key",
    }
    assert (await entries_written(r, keys), await r.get(keys.backlog_total)) == written  # nothing of it written
    assert (await api.get(f"/v1/jobs/{first['id']}")).status_code == 404
    fresh = await api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-2026-11-23b"})
    assert fresh.status_code == 202 and fresh.json()["id"] != first["id"]


@pytest.mark.parametrize("key", ["", "has space", "x" * 256])
async def test_malformed_idempotency_key_is_a_422_naming_the_header(api, r, key):
    resp = await api.post("/v1/jobs", json={"requests": [_ok()]}, headers={"Idempotency-Key": key})
    assert resp.status_code == 422 and "idempotency" in resp.text.lower()
    assert await r.dbsize() == 0


async def test_without_spend_limits_a_job_is_created_without_reading_reached_limits(api, r, keys):
    """No spend limit in the models file: nothing can be reached, so creation does not read the
    reached limits first (a round trip per job): one script call creates the job."""
    await api.post("/v1/jobs", json={"requests": [_ok()]})  # loads the script
    await r.config_set("slowlog-log-slower-than", 0)  # the slow log lists every call
    await r.slowlog_reset()
    try:
        resp = await api.post("/v1/jobs", json={"requests": [_ok(), _ok(model="beta")]})
        log = await r.slowlog_get(100)
    finally:
        await r.config_set("slowlog-log-slower-than", 10_000)
    assert resp.status_code == 202
    commands = [e["command"] for e in log]
    assert len([c for c in commands if c.lower().startswith(b"evalsha")]) == 1
    assert not [c for c in commands if keys.budgets_reached.encode() in c]


JOB = json.dumps({"requests": [{"model": "alpha", "prompt": "hi"}]}).encode()


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/jobs", JOB),
        ("/v1/webhooks", json.dumps({"url": "https://hooks.example.com/x"}).encode()),
        ("/v1/batches", json.dumps({"input_file_id": "file-x", "endpoint": "/v1/chat/completions"}).encode()),
    ],
)
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_json_body_sent_as_anything_else_is_a_415_naming_json(api, r, path, body, content_type):
    headers = {"content-type": content_type} if content_type else {}
    resp = await api.post(path, content=body, headers=headers)
    assert resp.status_code == 415, resp.text
    err = resp.json()["error"]
    assert err["type"] == "unsupported_media_type" and err["field"] == "Content-Type"
    assert "application/json" in err["message"]
    assert await r.dbsize() == 0


async def test_json_with_a_charset_is_json(api):
    resp = await api.post("/v1/jobs", content=JOB, headers={"content-type": "application/json; charset=utf-8"})
    assert resp.status_code == 202, resp.text


async def test_the_document_lists_the_415_of_json_bodies_only(api):
    paths = (await api.get("/openapi.json")).json()["paths"]
    for path, method in (("/v1/jobs", "post"), ("/v1/webhooks", "post"), ("/v1/batches", "post")):
        assert "415" in paths[path][method]["responses"], path
    assert "415" not in paths["/v1/files"]["post"]["responses"]  # multipart
    assert "415" not in paths["/v1/jobs"]["get"]["responses"]
