"""The OpenAI Batch API: the official `openai` SDK against a running stack, and line-numbered
validation errors for bad input files."""

from __future__ import annotations

import json
import time

import openai
import pytest

from inferq.localstack import LocalStack
from tests.services.ingest.test_api import api  # noqa: F401  (the in-process API fixture)

MODELS = """
[models.chat-m]
engine = "dummy"
max_inflight = 64
[models.chat-m.options]
latency_ms = 2

[models.slow-m]
engine = "dummy"
max_inflight = 4
[models.slow-m.options]
latency_ms = 200
"""


def _jsonl(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(l).encode() + b"\n" for l in lines)


def _chat_line(i: int, model: str = "chat-m") -> dict:
    return {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"hello number {i}"}],
            "max_tokens": 10,
        },
    }


@pytest.mark.e2e
def test_the_official_sdk_runs_a_batch_end_to_end(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    with LocalStack(models, workdir=tmp_path / "stack") as stack:
        client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key="not-needed-locally", max_retries=0)
        upload = client.files.create(file=("batch.jsonl", _jsonl([_chat_line(i) for i in range(300)])), purpose="batch")
        assert upload.object == "file" and upload.purpose == "batch" and upload.bytes > 0
        assert client.files.retrieve(upload.id).filename == "batch.jsonl"

        batch = client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"team": "search"},
        )
        assert (
            batch.status == "in_progress" and batch.request_counts.total == 300 and batch.metadata == {"team": "search"}
        )
        deadline = time.monotonic() + 60
        while (batch := client.batches.retrieve(batch.id)).status != "completed":
            assert batch.status in ("validating", "in_progress", "finalizing") and time.monotonic() < deadline, batch
            time.sleep(0.2)
        assert batch.request_counts.completed == 300 and batch.request_counts.failed == 0
        assert batch.completed_at and batch.output_file_id and batch.error_file_id is None

        lines = [json.loads(l) for l in client.files.content(batch.output_file_id).text.splitlines()]
        assert sorted(l["custom_id"] for l in lines) == sorted(f"req-{i}" for i in range(300))
        for line in lines:
            body = line["response"]["body"]
            assert line["error"] is None and line["response"]["status_code"] == 200
            assert body["object"] == "chat.completion" and body["model"] == "chat-m"
            i = line["custom_id"].split("-")[1]
            assert body["choices"][0]["message"] == {"role": "assistant", "content": f"hello number {i}"}
            assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"

        # a slow batch, cancelled while running: partial results kept, the rest in the error file
        slow = client.files.create(
            file=("slow.jsonl", _jsonl([_chat_line(i, "slow-m") for i in range(200)])), purpose="batch"
        )
        running = client.batches.create(input_file_id=slow.id, endpoint="/v1/chat/completions", completion_window="24h")
        time.sleep(0.5)
        cancelling = client.batches.cancel(running.id)
        assert cancelling.status in ("cancelling", "cancelled")
        deadline = time.monotonic() + 30
        while (cancelled := client.batches.retrieve(running.id)).status != "cancelled":
            assert time.monotonic() < deadline, cancelled
            time.sleep(0.2)
        errors = [json.loads(l) for l in client.files.content(cancelled.error_file_id).text.splitlines()]
        done = cancelled.request_counts.completed
        assert 0 < len(errors) and len(errors) + done == 200
        assert all(e["response"] is None and e["error"]["code"] == "batch_cancelled" for e in errors)

        listed = client.batches.list(limit=1)
        assert [b.id for b in listed.data] == [running.id] and listed.has_more
        assert [b.id for b in client.batches.list(limit=10, after=running.id).data] == [batch.id]
        assert client.files.delete(upload.id).deleted
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(upload.id)
        assert set(stack.stop().values()) == {0}


async def _batch_for(api, content: bytes, endpoint="/v1/chat/completions") -> dict:
    upload = await api.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    assert upload.status_code == 200, upload.text
    resp = await api.post(
        "/v1/batches", json={"input_file_id": upload.json()["id"], "endpoint": endpoint, "completion_window": "24h"}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def _ok_line(i, **body) -> dict:
    return {
        "custom_id": f"c{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], **body},
    }


INVALID_FILES = [
    (
        "bad json line",
        _jsonl([_ok_line(0)]) + b'{"custom_id": "c1", "method": \n',
        [(2, "invalid_json_line", "not valid JSON")],
    ),
    (
        "unknown model",
        _jsonl([_ok_line(0), _ok_line(1, model="nope")]),
        [(2, "model_not_found", "unknown model 'nope'")],
    ),
    (
        "duplicate custom_id",
        _jsonl([_ok_line(0), _ok_line(1), _ok_line(0)]),
        [(3, "duplicate_custom_id", "custom_id 'c0' is also used on line 1")],
    ),
    (
        "unsupported url",
        _jsonl([_ok_line(0), {**_ok_line(1), "url": "/v1/embeddings"}]),
        [(2, "invalid_url", "url '/v1/embeddings' does not match the batch's endpoint '/v1/chat/completions'")],
    ),
    (
        "several at once",
        _jsonl([_ok_line(0, model="x"), _ok_line(1), {**_ok_line(2), "method": "GET"}]),
        [(1, "model_not_found", "unknown model 'x'"), (3, "invalid_request", "method")],
    ),
    (
        "max_tokens over the model's limit",
        _jsonl([_ok_line(0), _ok_line(1, model="gamma", max_tokens=1000)]),
        [(2, "invalid_request_error", "line 2.max_tokens: 1000 exceeds the limit of 100")],
    ),
]


@pytest.mark.parametrize("name, content, expected", INVALID_FILES, ids=[c[0] for c in INVALID_FILES])
async def test_an_invalid_file_gives_a_failed_batch_naming_the_lines(api, r, keys, name, content, expected):  # noqa: F811
    batch = await _batch_for(api, content)
    assert batch["status"] == "failed" and batch["failed_at"] and batch["output_file_id"] is None
    errors = batch["errors"]["data"]
    assert [(e["line"], e["code"]) for e in errors] == [(line, code) for line, code, _ in expected]
    for e, (_, _, fragment) in zip(errors, expected):
        assert fragment in e["message"]
    assert await r.xlen(keys.ingest_stream) == 0  # nothing of it was queued
    again = await api.get(f"/v1/batches/{batch['id']}")
    assert again.json()["status"] == "failed"


async def test_completions_endpoint_and_wrong_purpose(api, r, keys):  # noqa: F811
    line = {
        "custom_id": "p",
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": "alpha", "prompt": "hi there"},
    }
    batch = await _batch_for(api, _jsonl([line]), endpoint="/v1/completions")
    assert batch["status"] == "in_progress" and batch["request_counts"]["total"] == 1
    chat_on_completions = await _batch_for(
        api, _jsonl([_ok_line(0) | {"url": "/v1/completions"}]), endpoint="/v1/completions"
    )
    assert (
        chat_on_completions["errors"]["data"][0]["message"]
        == "line 1: body.prompt must be a string (one prompt per line)"
    )
    wrong = await api.post("/v1/files", files={"file": ("x.jsonl", b"{}")}, data={"purpose": "fine-tune"})
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "purpose"
    missing = await api.post("/v1/batches", json={"input_file_id": "file-nope", "endpoint": "/v1/completions"})
    assert missing.status_code == 404
    bad_endpoint = await api.post("/v1/batches", json={"input_file_id": "file-x", "endpoint": "/v1/embeddings"})
    assert bad_endpoint.status_code == 422 and "endpoint" in bad_endpoint.json()["error"]["message"]
