"""What /openapi.json says follows the running server: its auth, its configuration, its routes.
(tests/e2e/test_api_fuzz.py proves the whole document against a real stack.)"""

from __future__ import annotations

import httpx
import msgspec
import pytest

from services.ingest.app import create_app


@pytest.fixture
async def app(r, settings, models):
    app = create_app(settings, models)
    async with app.router.lifespan_context(app):
        yield app


async def _call(app, method: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
        return await api.request(method, path)


@pytest.mark.parametrize(
    "path, allowed",
    [
        ("/v1/webhooks/wh_00000000000000000000000000", "DELETE, GET"),  # two routes, one path
        ("/v1/jobs", "GET, POST"),
        ("/healthz", "GET"),
    ],
)
async def test_a_405_lists_every_method_of_the_path(app, path, allowed):
    resp = await _call(app, "PUT", path)
    assert resp.status_code == 405 and resp.headers["allow"] == allowed
    assert resp.json()["error"]["type"] == "http_error"


async def test_401_is_documented_only_where_keys_are_checked(r, settings, models):
    for auth in ("on", "off"):
        configured = msgspec.structs.replace(settings, auth=auth, api_keys=f"t:{'k' * 20}" if auth == "on" else "")
        doc = create_app(configured, models).openapi()
        get_job = doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
        assert ("401" in get_job) == (auth == "on")
        assert "401" not in doc["paths"]["/healthz"]["get"]["responses"]


async def test_the_document_states_the_configuration_and_links_creates_to_their_resources(app):
    doc = (await _call(app, "GET", "/openapi.json")).json()
    spec = doc["components"]["schemas"]["RequestSpec"]["properties"]
    assert spec["model"]["enum"] == app.state.models.names()
    url = doc["components"]["schemas"]["WebhookCreate"]["properties"]["url"]["pattern"]
    assert url.startswith("^https://")  # plain http is off unless the setting allows it
    create = doc["paths"]["/v1/jobs"]["post"]["responses"]
    assert create["503"]["headers"]["Retry-After"]["required"] is True
    links = create["202"]["links"]
    get_job = doc["paths"]["/v1/jobs/{job_id}"]["get"]["operationId"]
    assert links[get_job]["parameters"] == {"job_id": "$response.body#/id"}
    assert "404" not in doc["paths"]["/v1/models"]["get"]["responses"]  # no id, nothing to miss


@pytest.mark.parametrize("purpose", ["fine-tune", ""])
async def test_an_upload_for_another_purpose_is_a_422_naming_it(app, purpose):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
        resp = await api.post("/v1/files", files={"file": ("in.jsonl", b"{}\n")}, data={"purpose": purpose})
    assert resp.status_code == 422 and resp.json()["error"]["field"].endswith("purpose"), resp.text


async def test_an_upload_with_a_field_the_document_does_not_name_is_a_422_naming_it(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
        resp = await api.post(
            "/v1/files", files={"file": ("in.jsonl", b"{}\n")}, data={"purpose": "batch", "expires_after": "1h"}
        )
        ok = await api.post("/v1/files", files={"file": ("in.jsonl", b"{}\n")}, data={"purpose": "batch"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "expires_after" and "unknown form field" in resp.json()["error"]["message"]
    assert ok.status_code == 200, ok.text


async def test_the_upload_form_is_closed(app):
    doc = (await _call(app, "GET", "/openapi.json")).json()
    ref = doc["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    form = doc["components"]["schemas"][ref.rpartition("/")[2]]
    assert form["additionalProperties"] is False and set(form["properties"]) == {"file", "purpose"}
