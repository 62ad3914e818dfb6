"""The whole pipeline on the real vLLM: ingest, a dispatcher and a `vllm`-engine worker as real
processes on a real redis-server, serving the tiny Llama. Completion and chat requests succeed with
text and token counts, max_tokens and stop are honoured, greedy output repeats, a prompt longer
than the context fails alone as `invalid_request`, and cancelling a job aborts its running requests
inside vLLM."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from inferq.localstack import LocalStack
from tests.vllm_cpu.conftest import CONTEXT, LOAD_S

pytestmark = pytest.mark.e2e


def _wait(client: httpx.Client, stack: LocalStack, job_id: str, statuses: tuple[str, ...], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not {statuses} in {timeout}s: {job}")


def _results(client: httpx.Client, job_id: str) -> dict[str, dict]:
    resp = client.get(f"/v1/jobs/{job_id}/results", params={"limit": 1000})
    assert resp.status_code == 200
    return {line["custom_id"]: line for line in map(json.loads, resp.text.splitlines())}


def test_completions_and_chats_through_the_pipeline(client, stack):
    greedy = {"temperature": 0, "max_tokens": 16}
    requests = [
        {"custom_id": "plain", "model": "tiny", "prompt": "a haiku about the ocean", **greedy},
        {"custom_id": "again", "model": "tiny", "prompt": "a haiku about the ocean", **greedy},
        {"custom_id": "short", "model": "tiny", "prompt": "mountain trains", "temperature": 0, "max_tokens": 3},
        {
            "custom_id": "chat",
            "model": "tiny",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}],
            **greedy,
        },
        {"custom_id": "sampled", "model": "tiny", "prompt": "city rain", "max_tokens": 8, "seed": 7},
        {"custom_id": "too-long", "model": "tiny", "prompt": "the lazy dog " * CONTEXT, **greedy},
    ]
    job = client.post("/v1/jobs", json={"requests": requests}).json()
    done = _wait(client, stack, job["id"], ("completed",), LOAD_S)
    assert done["request_counts"]["succeeded"] == 5 and done["request_counts"]["failed"] == 1
    lines = _results(client, job["id"])
    for cid in ("plain", "again", "chat", "sampled", "short"):
        line = lines[cid]
        assert line["status"] == "succeeded" and line["output"]["text"], line
        assert line["usage"]["prompt_tokens"] > 0 and line["usage"]["completion_tokens"] > 0
    assert lines["plain"]["output"]["text"] == lines["again"]["output"]["text"]  # temperature 0 repeats
    assert lines["plain"]["usage"]["completion_tokens"] == 16 and lines["plain"]["output"]["finish_reason"] == "length"
    assert lines["short"]["usage"]["completion_tokens"] == 3  # max_tokens honoured
    assert lines["chat"]["usage"]["prompt_tokens"] > lines["plain"]["usage"]["prompt_tokens"]  # the template's turns
    bad = lines["too-long"]
    assert bad["status"] == "failed" and bad["error"]["code"] == "invalid_request"
    assert f"maximum context length is {CONTEXT} tokens" in bad["error"]["message"]

    # stop: cut where the greedy text has a piece we name as a stop sequence
    text = lines["plain"]["output"]["text"]
    stop = text[len(text) // 2 :][:3]
    job = client.post(
        "/v1/jobs",
        json={
            "requests": [
                {"custom_id": "stopped", "model": "tiny", "prompt": "a haiku about the ocean", "stop": [stop], **greedy}
            ]
        },
    ).json()
    _wait(client, stack, job["id"], ("completed",), 60)
    line = _results(client, job["id"])["stopped"]
    assert line["output"]["finish_reason"] == "stop" and stop not in line["output"]["text"]
    assert text.startswith(line["output"]["text"]) and line["usage"]["completion_tokens"] < 16


def test_cancel_aborts_running_requests_inside_vllm(client, stack):
    # greedy output of a random model never reaches its end of sequence: each request runs to
    # max_tokens, seconds on this CPU, so the cancel lands while requests are inside vLLM
    long = {"model": "tiny", "temperature": 0, "max_tokens": CONTEXT - 32}
    job = client.post(
        "/v1/jobs",
        json={"requests": [{"custom_id": f"r{i}", "prompt": f"desert stars {i}", **long} for i in range(40)]},
    ).json()
    deadline = time.monotonic() + LOAD_S
    while client.get(f"/v1/jobs/{job['id']}").json()["request_counts"]["running"] < 4:
        assert time.monotonic() < deadline, "requests never started"
        time.sleep(0.05)
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    done = _wait(client, stack, job["id"], ("cancelled",), 60)
    c = done["request_counts"]
    assert c["cancelled"] + c["succeeded"] == 40 and c["cancelled"] >= 32 and c["running"] == 0
    lines = _results(client, job["id"])
    cancelled = {line["request_id"] for line in lines.values() if line["status"] == "cancelled"}
    log = stack.log_path("worker-tiny-0").read_text(errors="replace")
    aborted = {rid for rid in cancelled if f"Aborted request(s) {rid}" in log}
    assert aborted, "no cancelled request was aborted inside vLLM"  # the ones running at the cancel
    # the ones that were running ended cancelled, not after running to max_tokens
    assert all(line["usage"]["completion_tokens"] == 0 for line in lines.values() if line["status"] == "cancelled")
    assert stack.procs["worker-tiny-0"].poll() is None  # the worker serves on
