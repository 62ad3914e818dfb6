"""The dashboard's files are served at /ui without a key (the page asks for one and calls the API
with it), locked to this origin by their Content-Security-Policy, and shipped in the package."""

from __future__ import annotations

import re
import tomllib

import httpx
import msgspec
import pytest

from services.ingest.app import create_app
from services.ingest.dashboard import UI_DIR
from shared.ops.metrics import HTTP_REQUESTS
from tests.conftest import ROOT


@pytest.fixture
async def api(r, settings, models):
    app = create_app(msgspec.structs.replace(settings, auth="on", api_keys=f"t:{'k' * 20}"), models)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client


async def test_the_page_and_its_files_need_no_key_and_stay_on_this_origin(api):
    assert (await api.get("/v1/models")).status_code == 401
    moved = await api.get("/ui")
    assert moved.status_code in (307, 308) and moved.headers["location"].endswith("/ui/")
    page = await api.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for src in re.findall(r'(?:src|href)="([\w.]+\.(?:js|css))"', page.text):
        resp = await api.get(f"/ui/{src}")
        assert resp.status_code == 200, src
    script = await api.get("/ui/app.js")
    assert script.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert (await api.get("/ui/nothing-here.js")).status_code == 404


def test_every_file_reaches_only_this_origin():
    """No CDN, no framework: every import is a sibling module, every fetch a path of this API."""
    for path in UI_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), path.name
        for module in re.findall(r'from "([^"]+)"', text):
            assert module.startswith("./") and (UI_DIR / module).exists(), (path.name, module)


def test_the_files_are_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["services"]
    shipped = {p for pattern in data for p in (ROOT / "services").glob(pattern)}
    assert set(UI_DIR.iterdir()) <= shipped


async def test_the_files_are_counted_under_one_route_label(api):
    before = HTTP_REQUESTS.labels("GET", "/ui", "200")._value.get()
    await api.get("/ui/app.js")
    await api.get("/ui/style.css")
    assert HTTP_REQUESTS.labels("GET", "/ui", "200")._value.get() == before + 2
