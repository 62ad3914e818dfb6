"""The whole pipeline as real processes (ingest, dispatchers, workers) on a real redis-server."""

from __future__ import annotations

import json
import time
import zlib

import httpx
import pytest

from inferq.localstack import LocalStack

pytestmark = pytest.mark.e2e
MODELS = ["alpha", "beta", "gamma"]


def _jobs() -> list[dict]:
    """Three jobs, 3,000 requests over three models, in both accepted body shapes."""
    native = {
        "requests": [
            {
                "custom_id": f"n-{i}",
                "model": MODELS[i % 3],
                "prompt": f"native prompt number {i} " + "w " * (i % 7),
                "max_tokens": 5,
            }
            for i in range(1200)
        ],
        "metadata": {"shape": "native"},
    }
    prompts = {
        "prompts": [{"id": f"p-{i}", "model": MODELS[(i // 10) % 3], "prompt": f"short {i}"} for i in range(1000)]
    }
    chat = {
        "requests": [
            {
                "custom_id": f"c-{i}",
                "model": MODELS[(i + 1) % 3],
                "messages": [
                    {"role": "system", "content": "be terse"},
                    {"role": "user", "content": f"question {i} please"},
                ],
            }
            for i in range(800)
        ]
    }
    return [native, prompts, chat]


def _custom_ids(body: dict) -> dict[str, str]:
    items = body.get("requests") or body["prompts"]
    return {(it.get("custom_id") or it.get("id")): it["model"] for it in items}


def _wait_completed(
    client: httpx.Client, job_ids: list[str], stack: LocalStack, timeout: float = 180
) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    jobs: dict[str, dict] = {}
    while time.monotonic() < deadline:
        stack.check_alive()
        jobs = {j: client.get(f"/v1/jobs/{j}").json() for j in job_ids}
        if all(j["status"] == "completed" for j in jobs.values()):
            return jobs
        time.sleep(0.25)
    raise AssertionError(
        f"jobs not completed in {timeout}s: {[(j['id'], j['status'], j['request_counts']) for j in jobs.values()]}"
    )


def _all_results(client: httpx.Client, job_id: str) -> list[dict]:
    lines, cursor = [], None
    while True:
        params = {"limit": 700, **({"after": cursor} if cursor else {})}
        resp = client.get(f"/v1/jobs/{job_id}/results", params=params)
        assert resp.status_code == 200
        page = [json.loads(l) for l in resp.text.splitlines()]
        if not page:
            return lines
        lines += page
        cursor = resp.headers["inferq-next-cursor"]


def _expected_failures(request_ids: list[str], model_of: dict[str, str]) -> int:
    # gamma's dummy engine fails 5% of requests, chosen by request id (see the test models file)
    return sum(1 for rid in request_ids if model_of[rid] == "gamma" and zlib.crc32(rid.encode()) < 0.05 * 2**32)


@pytest.mark.parametrize(
    "dispatchers, workers", [(1, 1), (2, 2)], ids=["1-dispatcher-1-worker", "2-dispatchers-2-workers"]
)
def test_three_jobs_complete_with_exact_counts(tmp_path, models_file, dispatchers, workers):
    bodies = _jobs()
    with LocalStack(
        models_file, workdir=tmp_path / "stack", dispatchers=dispatchers, workers_per_model=workers
    ) as stack:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            accepted = []
            for body in bodies:
                resp = client.post("/v1/jobs", json=body)
                assert resp.status_code == 202, resp.text
                accepted.append(resp.json())
            assert sum(a["request_counts"]["total"] for a in accepted) == 3000
            jobs = _wait_completed(client, [a["id"] for a in accepted], stack)

            for body, acc in zip(bodies, accepted):
                job = jobs[acc["id"]]
                expected = _custom_ids(body)
                results = _all_results(client, job["id"])
                # exactly one line per request, with the caller's custom_id and model
                assert len(results) == len(expected)
                assert {r["custom_id"]: r["model"] for r in results} == expected
                assert len({r["request_id"] for r in results}) == len(expected)

                c = job["request_counts"]
                assert c["total"] == len(expected) and c["queued"] == 0 and c["running"] == 0
                assert c["succeeded"] + c["failed"] == c["total"]
                model_of = {r["request_id"]: r["model"] for r in results}
                assert c["failed"] == _expected_failures(list(model_of), model_of)
                assert c["failed"] == sum(r["status"] == "failed" for r in results)
                for model in MODELS:
                    mc = job["models"][model]
                    assert mc["total"] == sum(m == model for m in expected.values())
                    assert mc["succeeded"] + mc["failed"] == mc["total"]
                assert job["usage"]["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in results)
                assert job["usage"]["completion_tokens"] == sum(r["usage"]["completion_tokens"] for r in results)
                assert job["started_at"] is not None and job["completed_at"] >= job["created_at"]
                ok = next(r for r in results if r["status"] == "succeeded")
                assert (
                    ok["output"]["text"] and ok["output"]["finish_reason"] in ("stop", "length") and ok["error"] is None
                )
                assert ok["timings"]["queued_ms"] >= 0 and ok["timings"]["inference_ms"] >= 0
                bad = [r for r in results if r["status"] == "failed"]
                assert all(r["error"]["code"] == "simulated_failure" and r["output"] is None for r in bad)

            assert jobs[accepted[0]["id"]]["metadata"] == {"shape": "native"}
            models = {m["id"]: m["queue"] for m in client.get("/v1/models").json()["data"]}
            assert all(
                (q["unfinished"], q["queued"], q["routed_unread"], q["pending"]) == (0, 0, 0, 0)
                for q in models.values()
            )
            assert all(q["consumers"] >= workers for q in models.values())
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes


def test_results_are_readable_while_the_job_runs(tmp_path, models_file):
    slow = models_file.read_text().replace(
        '[models.alpha]\nengine = "dummy"\nmax_inflight = 64',
        '[models.alpha]\nengine = "dummy"\nmax_inflight = 4\n[models.alpha.options]\nlatency_ms = 20',
    )
    models_file.write_text(slow)
    with LocalStack(models_file, workdir=tmp_path / "stack", models=["alpha"]) as stack:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            job = client.post(
                "/v1/jobs", json={"prompts": [{"model": "alpha", "prompt": f"x {i}"} for i in range(400)]}
            ).json()
            time.sleep(0.5)
            first = client.get(f"/v1/jobs/{job['id']}/results", params={"limit": 10_000})  # a page: with cursor
            partial = first.text.splitlines()
            assert first.headers["inferq-job-status"] == "in_progress"
            assert 0 < len(partial) < 400
            _wait_completed(client, [job["id"]], stack)
            rest = client.get(
                f"/v1/jobs/{job['id']}/results", params={"after": first.headers["inferq-next-cursor"], "limit": 10_000}
            )
            ids = [json.loads(l)["request_id"] for l in partial + rest.text.splitlines()]
            assert len(ids) == 400 == len(set(ids))
