"""GET /v1/jobs: the caller's jobs, newest first, cursor-paged and filtered, never another tenant's;
and the per-tenant index behind it, bounded by the jobs that still exist."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest

from services.dispatcher.maintenance import forget_expired_jobs
from services.ingest.app import create_app
from services.ingest.job_listing import SCAN_PER_PAGE

KEY_A = "acme-key-0123456789abcdef"
KEY_B = "beta-key-0123456789abcdef"


@pytest.fixture
async def apis(r, settings, models):
    settings = msgspec.structs.replace(settings, auth="on", api_keys=f"acme:{KEY_A},beta:{KEY_B}")
    app = create_app(settings, models)
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


async def _submit(api: httpx.AsyncClient, **body) -> str:
    resp = await api.post("/v1/jobs", json={"requests": [{"model": "alpha", "prompt": "hi"}], **body})
    assert resp.status_code == 202, resp.text
    await asyncio.sleep(0.002)  # distinct creation milliseconds: "newest first" has one right order
    return resp.json()["id"]


async def _all_pages(
    api: httpx.AsyncClient, limit: int, after: str | None = None, **params
) -> tuple[list[dict], list[dict]]:
    """Every job, following next_cursor; and the pages' envelopes (without data)."""
    jobs: list[dict] = []
    pages: list[dict] = []
    while True:
        resp = await api.get("/v1/jobs", params={"limit": limit, **params, **({"after": after} if after else {})})
        assert resp.status_code == 200, resp.text
        page = resp.json()
        jobs += page["data"]
        pages.append({k: v for k, v in page.items() if k != "data"} | {"count": len(page["data"])})
        if not page["has_more"]:
            return jobs, pages
        after = page["next_cursor"]


async def test_pages_list_every_job_once_newest_first_and_only_the_callers(apis):
    a, b = apis
    mine, theirs = [], []
    for i in range(250):
        mine.append(await _submit(a))
        if i % 25 == 0:
            theirs.append(await _submit(b))
    jobs, pages = await _all_pages(a, 100)
    assert [j["id"] for j in jobs] == mine[::-1]
    assert [(p["count"], p["has_more"], p["next_cursor"] is None) for p in pages] == [
        (100, True, False),
        (100, True, False),
        (50, False, True),
    ]
    assert all(p["object"] == "list" for p in pages)
    assert jobs[0]["object"] == "job" and jobs[0]["request_counts"]["total"] == 1
    their_jobs, _ = await _all_pages(b, 100)
    assert [j["id"] for j in their_jobs] == theirs[::-1]
    default = (await a.get("/v1/jobs")).json()
    assert [j["id"] for j in default["data"]] == mine[::-1][:20] and default["has_more"] is True


async def test_status_and_metadata_filters(apis):
    a, _ = apis
    search = [await _submit(a, metadata={"team": "search", "run": str(i)}) for i in range(5)]
    ads = [await _submit(a, metadata={"team": "ads"}) for _ in range(3)]
    plain = [await _submit(a) for _ in range(2)]
    for job_id in (search[1], ads[0]):
        assert (await a.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200

    stopped, _ = await _all_pages(a, 2, status="cancelling")
    assert [j["id"] for j in stopped] == [ads[0], search[1]]
    queued, _ = await _all_pages(a, 100, status="queued")
    assert [j["id"] for j in queued] == [j for j in (search + ads + plain)[::-1] if j not in (search[1], ads[0])]
    done = (await a.get("/v1/jobs", params={"status": "completed"})).json()
    assert done == {"object": "list", "data": [], "has_more": False, "next_cursor": None}

    team, pages = await _all_pages(a, 2, **{"metadata[team]": "search"})
    assert [j["id"] for j in team] == search[::-1]
    assert [p["count"] for p in pages] == [2, 2, 1]
    both, _ = await _all_pages(a, 10, status="queued", **{"metadata[team]": "ads"})
    assert [j["id"] for j in both] == ads[:0:-1]
    none, _ = await _all_pages(a, 10, **{"metadata[team]": "nobody"})
    assert none == []


async def test_a_rare_match_is_reached_through_bounded_pages(apis):
    """A page reads at most SCAN_PER_PAGE jobs: a filter that matches only the oldest job gives a
    page with no jobs whose cursor moves on, then the match, then the end."""
    a, _ = apis
    oldest = await _submit(a, metadata={"team": "rare"})
    for _ in range(SCAN_PER_PAGE + 20):
        resp = await a.post("/v1/jobs", json={"requests": [{"model": "alpha", "prompt": "hi"}]})
        assert resp.status_code == 202
    jobs, pages = await _all_pages(a, 20, **{"metadata[team]": "rare"})
    assert [j["id"] for j in jobs] == [oldest]
    assert [(p["count"], p["has_more"]) for p in pages] == [(0, True), (1, False)]


async def test_bad_parameters_are_422_naming_the_field(apis):
    a, _ = apis
    await _submit(a)
    cases = [
        ({"status": "done"}, "status"),
        ({"after": "yesterday"}, "after"),
        ({"after": "12-job_nope"}, "after"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"metadata[team]": "a", "metadata[run]": "1"}, "metadata"),
        ({"metadata[]": "a"}, "metadata"),
        ({"metadata[team]": "x" * 513}, "metadata"),
    ]
    for params, field in cases:
        resp = await a.get("/v1/jobs", params=params)
        assert resp.status_code == 422, (params, resp.text)
        assert resp.json()["error"]["field"] == field, (params, resp.json())


async def test_another_tenants_cursor_shows_nothing_of_theirs(apis):
    a, b = apis
    for _ in range(3):
        await _submit(b)
    mine = [await _submit(a) for _ in range(3)]
    theirs = (await b.get("/v1/jobs", params={"limit": 1})).json()
    page = (await a.get("/v1/jobs", params={"after": theirs["next_cursor"]})).json()
    assert {j["id"] for j in page["data"]} <= set(mine)


async def test_expired_jobs_leave_their_tenants_index(apis, r, keys):
    a, _ = apis
    gone, kept = await _submit(a), await _submit(a)
    await r.delete(*keys.job_keys(gone))  # what the job's TTL does once it has ended
    assert await forget_expired_jobs({"keys": keys, "stream_redis": r}) == 1
    assert [m.decode() for m in await r.zrange(keys.tenant_jobs("acme"), 0, -1)] == [kept]
    assert await r.hkeys(keys.job_tenants) == [kept.encode()]
    assert [j["id"] for j in (await a.get("/v1/jobs")).json()["data"]] == [kept]


async def test_a_cursor_whose_job_has_expired_still_continues_after_it(apis, r, keys):
    a, _ = apis
    oldest, middle, newest = await _submit(a), await _submit(a), await _submit(a)
    first = (await a.get("/v1/jobs", params={"limit": 1})).json()
    assert [j["id"] for j in first["data"]] == [newest]
    await r.delete(*keys.job_keys(newest))
    await forget_expired_jobs({"keys": keys, "stream_redis": r})
    rest, _ = await _all_pages(a, 1, after=first["next_cursor"])
    assert [j["id"] for j in rest] == [middle, oldest]
