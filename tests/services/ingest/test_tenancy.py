"""API keys and tenant isolation: every resource of one tenant is invisible to another (404, not
403), keys are stored hashed, revoked keys stop working, and per-tenant limits answer 429."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest

from services.ingest.app import create_app
from shared.catalog.api_keys import ApiKeyStore
from shared.lanes.dead_letters import META_FIELD, meta
from shared.redis.keys import PAYLOAD_FIELD
from shared.wire.api import DeadLetter

KEY_A = "acme-key-0123456789abcdef"
KEY_B = "beta-key-0123456789abcdef"
JSONL = "\n".join(
    json.dumps(
        {
            "custom_id": f"c{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]},
        }
    )
    for i in range(2)
)


def make_api(settings, models, **overrides):
    settings = msgspec.structs.replace(settings, auth="on", api_keys=f"acme:{KEY_A},beta:{KEY_B}", **overrides)
    return create_app(settings, models)


@pytest.fixture
async def apps(r, settings, models):
    app = make_api(settings, models)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(
                transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {KEY_A}"}
            ) as a,
            httpx.AsyncClient(
                transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {KEY_B}"}
            ) as b,
            httpx.AsyncClient(transport=transport, base_url="http://t") as anon,
        ):
            yield a, b, anon


async def test_requests_without_a_valid_key_are_401(apps):
    _, _, anon = apps
    for headers in ({}, {"Authorization": "Bearer nope-not-a-key"}, {"Authorization": "Basic abc"}):
        resp = await anon.get("/v1/models", headers=headers)
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["error"]["field"] == "Authorization"
    assert (await anon.get("/healthz")).status_code == 200  # probes need no key


async def test_a_401_says_how_to_get_a_key(apps):
    _, _, anon = apps
    missing = await anon.get("/v1/models")
    unknown = await anon.get("/v1/models", headers={"Authorization": "Bearer nope-not-a-key"})
    assert missing.json()["error"]["message"].startswith(
        "Authorization: this API needs `Authorization: Bearer <API key>`; "
    )
    assert unknown.json()["error"]["message"].startswith("Authorization: unknown or revoked API key; ")
    for resp in (missing, unknown):
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["error"]["message"].endswith(
            "create one with `inferq keys create --tenant <name>` (on the services' Redis), or start the API "
            "with INFERQ_API_KEYS=<tenant>:<key>; INFERQ_AUTH=off for a local trial"
        )


async def test_every_resource_is_invisible_to_another_tenant(apps, r, keys):
    a, b, _ = apps
    job = (await a.post("/v1/jobs", json={"requests": [{"model": "alpha", "prompt": "x"}]})).json()
    job_id = job["id"]
    file_id = (await a.post("/v1/files", files={"file": ("in.jsonl", JSONL)}, data={"purpose": "batch"})).json()["id"]
    batch = (
        await a.post(
            "/v1/batches",
            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        )
    ).json()
    hook = (await a.post("/v1/webhooks", json={"url": "https://93.184.216.34/hook"})).json()
    info = DeadLetter(
        source="test",
        reason="max_attempts_exceeded",
        job_id=job_id,
        request_id="req_x",
        model="alpha",
        lane="batch",
        requeueable=True,
    )
    dead_id = (await r.xadd(keys.dead_letter_stream, {PAYLOAD_FIELD: b"x", META_FIELD: meta(info)})).decode()

    owner_sees = [
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/results",
        f"/v1/files/{file_id}",
        f"/v1/files/{file_id}/content",
        f"/v1/batches/{batch['id']}",
        f"/v1/webhooks/{hook['id']}",
        f"/v1/webhooks/{hook['id']}/deliveries",
        f"/v1/dead-letters/{dead_id}",
    ]
    for path in owner_sees:
        assert (await a.get(path)).status_code == 200, path
        resp = await b.get(path)
        assert resp.status_code == 404, path  # not 403: another tenant's id looks like a missing one
    assert (await b.get(f"/v1/jobs/{job_id}/events")).status_code == 404
    for path in (
        f"/v1/jobs/{job_id}/cancel",
        f"/v1/batches/{batch['id']}/cancel",
        f"/v1/webhooks/{hook['id']}/rotate",
        f"/v1/dead-letters/{dead_id}/requeue",
    ):
        assert (await b.post(path)).status_code == 404, path
    assert (await b.delete(f"/v1/files/{file_id}")).status_code == 404
    assert (await b.delete(f"/v1/webhooks/{hook['id']}")).status_code == 404
    resp = await b.post(
        "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    )
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "input_file_id"

    # lists show only the caller's own
    assert (await b.get("/v1/batches")).json()["data"] == []
    assert (await b.get("/v1/webhooks")).json()["data"] == []
    assert (await b.get("/v1/dead-letters")).json()["data"] == []
    assert [d["id"] for d in (await a.get("/v1/dead-letters")).json()["data"]] == [dead_id]
    assert [x["id"] for x in (await a.get("/v1/batches")).json()["data"]] == [batch["id"]]
    # nothing of A's changed
    assert (await a.get(f"/v1/jobs/{job_id}")).json()["status"] != "cancelling"
    assert (await a.get(f"/v1/webhooks/{hook['id']}")).status_code == 200
    # the same Idempotency-Key in two tenants names two jobs
    body = {"requests": [{"model": "alpha", "prompt": "same"}]}
    ja = (await a.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})).json()["id"]
    jb = (await b.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})).json()["id"]
    assert ja != jb


async def test_keys_are_stored_hashed_and_revocation_works(r, keys, settings, models):
    store = ApiKeyStore(r, keys)
    key, rec = await store.create("gamma", "ci")
    assert key.startswith("iq_") and rec.tenant == "gamma"
    dump = b"".join([k + (await r.dump(k) or b"") for k in await r.keys("*")])
    assert key.encode() not in dump  # only its SHA-256 is kept
    app = make_api(settings, models)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {key}"}
        ) as c:
            assert (await c.get("/v1/webhooks")).status_code == 200
            assert [k.id for k in await store.list()] == [rec.id]
            assert (await store.revoke(rec.id)).tenant == "gamma"
    app = make_api(settings, models)  # a running ingest forgets a revoked key within a few seconds; a new one at once
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {key}"}
        ) as c:
            assert (await c.get("/v1/webhooks")).status_code == 401


async def test_tenant_limits_answer_429_and_write_nothing(r, keys, settings, models):
    app = make_api(settings, models, tenant_rate=10.0, tenant_burst=20, tenant_max_queued=30)
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

            def job(n):
                return {"requests": [{"model": "alpha", "prompt": "x"} for _ in range(n)]}

            assert (await a.post("/v1/jobs", json=job(15))).status_code == 202
            resp = await a.post("/v1/jobs", json=job(15))  # 5 tokens left in the bucket
            assert resp.status_code == 429 and resp.json()["error"]["type"] == "rate_limited"
            assert int(resp.headers["retry-after"]) >= 1
            resp = await a.post("/v1/jobs", json=job(21))
            assert resp.status_code == 429 and "burst" in resp.json()["error"]["message"]
            assert (await b.post("/v1/jobs", json=job(20))).status_code == 202  # another tenant has its own bucket
            await r.delete(keys.rate_bucket("acme"))  # refill A's bucket: now only the queued limit binds
            resp = await a.post("/v1/jobs", json=job(16))  # 15 queued + 16 > 30
            assert resp.status_code == 429 and resp.json()["error"]["type"] == "tenant_limit"
            assert int(await r.hget(keys.tenant_backlog, "acme")) == 15
            assert int(await r.hget(keys.tenant_backlog, "beta")) == 20
            assert await r.zcard(keys.jobs_index) == 2  # the refused jobs wrote nothing


async def test_limits_on_input_sizes(apps, settings, models):
    a, _, _ = apps
    resp = await a.post(
        "/v1/jobs",
        json={
            "requests": [
                {"model": "alpha", "prompt": "ok"},
                {"model": "alpha", "prompt": "x" * (settings.max_prompt_chars + 1)},
            ]
        },
    )
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "requests[1].prompt"
    resp = await a.post(
        "/v1/jobs",
        json={
            "requests": [
                {
                    "model": "alpha",
                    "messages": [
                        {"role": "user", "content": "y" * settings.max_prompt_chars},
                        {"role": "user", "content": "z"},
                    ],
                }
            ]
        },
    )
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "requests[0].messages"
    resp = await a.post("/v1/jobs", json={"requests": [{"model": "gamma", "prompt": "x", "max_tokens": 101}]})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "requests[0].max_tokens"
    resp = await a.post(
        "/v1/jobs",
        json={"requests": [{"model": "alpha", "prompt": "x"}], "metadata": {f"k{i}": "v" for i in range(17)}},
    )
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "metadata"
    resp = await a.post(
        "/v1/jobs",
        content=b"{" + b" " * (settings.max_body_bytes + 1) + b"}",
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 413


def test_keys_cli_creates_lists_and_revokes(redis_server):
    from typer.testing import CliRunner

    from inferq.cli import app as cli

    runner = CliRunner()
    url = ["--redis-url", redis_server.url, "--prefix", "clitest"]
    created = runner.invoke(cli, ["keys", "create", "--tenant", "acme", "--name", "ci", *url])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("iq_")
    listed = runner.invoke(cli, ["keys", "list", *url])
    assert listed.exit_code == 0 and "acme" in listed.stdout and key not in listed.stdout
    key_id = next(line.split()[1] for line in listed.stdout.splitlines() if "acme" in line)
    assert runner.invoke(cli, ["keys", "create", "--tenant", "Bad Name!", *url]).exit_code == 2
    revoked = runner.invoke(cli, ["keys", "revoke", key_id, *url])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert runner.invoke(cli, ["keys", "revoke", key_id, *url]).exit_code == 2
