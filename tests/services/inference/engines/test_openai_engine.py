"""The `openai` engine against an OpenAI-protocol server on loopback: chat and completions,
rate limits with Retry-After, permanent errors, concurrency, and through a worker on real Redis."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from services.inference.engines import EngineError, create_engine
from services.inference.engines.openai_engine import OpenAIEngine
from services.inference.worker import InferenceWorker
from shared.catalog.models import OpenAIOptions, parse_models
from shared.jobs.store import JobStore
from shared.redis.keys import PAYLOAD_FIELD
from shared.wire.api import ChatMessage
from shared.wire.messages import InferenceRequest, SamplingParams
from tests.support.openai_server import OpenAIStub
from tests.support.published import published_results


@pytest.fixture
def stub():
    with OpenAIStub() as server:
        yield server


def _engine(stub, **kw) -> OpenAIEngine:
    return OpenAIEngine(OpenAIOptions(base_url=stub.base_url, backoff_s=0.01, **kw), "public-name")


def _req(i=0, prompt: str | None = "one two three", messages=None, **params) -> InferenceRequest:
    return InferenceRequest(
        request_id=f"req_{i}",
        job_id="job_o",
        custom_id=f"c{i}",
        model="m",
        accepted_ms=0,
        prompt=None if messages else prompt,
        messages=messages,
        params=SamplingParams(**{"max_tokens": 16, **params}),
    )


async def test_chat_and_completions_map_fields_both_ways(stub, monkeypatch):
    monkeypatch.setenv("UPSTREAM_KEY", "sk-test-123")
    eng = _engine(stub, model="upstream-model", api_key_env="UPSTREAM_KEY")
    await eng.start()
    try:
        chat = await eng.generate(
            _req(
                0,
                messages=[ChatMessage("system", "be kind"), ChatMessage("user", "hello there")],
                temperature=0.2,
                top_p=0.9,
                stop=["\n"],
                seed=3,
                max_tokens=2,
            )
        )
        text = await eng.generate(_req(1, "alpha beta gamma"))
    finally:
        await eng.stop()
    assert (
        chat.text == "kind be"
        and chat.finish_reason == "length"
        and (chat.prompt_tokens, chat.completion_tokens) == (4, 2)
    )
    assert text.text == "gamma beta alpha" and text.finish_reason == "stop" and text.completion_tokens == 3
    first, second = stub.calls
    assert first["path"] == "/v1/chat/completions" and second["path"] == "/v1/completions"
    assert first["body"] == {
        "model": "upstream-model",
        "max_tokens": 2,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 3,
        "messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello there"}],
    }
    assert second["body"] == {"model": "upstream-model", "max_tokens": 16, "prompt": "alpha beta gamma"}
    assert first["headers"]["authorization"] == "Bearer sk-test-123"
    assert first["headers"]["x-request-id"] == "req_0"


async def test_a_429_is_retried_after_retry_after_then_succeeds(stub):
    eng = _engine(stub)
    await eng.start()
    try:
        t0 = time.monotonic()
        out = await eng.generate(_req(0, "RATE-LIMIT me please"))
        waited = time.monotonic() - t0
    finally:
        await eng.stop()
    assert out.text == "please me RATE-LIMIT"
    assert len(stub.calls) == 2 and stub.calls[1]["at"] - stub.calls[0]["at"] >= 0.95  # Retry-After: 1
    assert waited >= 0.95


async def test_a_400_fails_at_once_with_the_upstream_message(stub):
    eng = _engine(stub)
    await eng.start()
    try:
        with pytest.raises(EngineError) as err:
            await eng.generate(_req(0, "BAD input"))
    finally:
        await eng.stop()
    assert not err.value.retryable and err.value.code == "upstream_400"
    assert "maximum context length is 8 tokens" in err.value.message
    assert len(stub.calls) == 1  # never retried


async def test_a_server_that_stays_down_is_a_retryable_failure_after_the_engine_retries(stub):
    eng = _engine(stub, max_retries=2)
    await eng.start()
    try:
        with pytest.raises(EngineError) as err:
            await eng.generate(_req(0, "DOWN"))
    finally:
        await eng.stop()
    assert err.value.retryable and err.value.code == "upstream_503" and len(stub.calls) == 3


async def test_a_refused_connection_is_retryable():
    eng = OpenAIEngine(OpenAIOptions(base_url="http://127.0.0.1:9/v1", max_retries=1, backoff_s=0.01), "m")
    await eng.start()
    try:
        with pytest.raises(EngineError) as err:
            await eng.generate(_req())
    finally:
        await eng.stop()
    assert err.value.retryable and err.value.code == "upstream_unavailable"


async def test_concurrency_is_capped(stub):
    stub.delay_s = 0.05
    eng = _engine(stub, max_concurrency=3)
    await eng.start()
    try:
        outs = await asyncio.gather(*(eng.generate(_req(i, f"w{i} x")) for i in range(12)))
    finally:
        await eng.stop()
    assert len(outs) == 12 and stub.max_in_flight == 3


async def test_messages_to_a_completions_only_model_fail_permanently(stub):
    eng = _engine(stub, api="completions")
    await eng.start()
    try:
        with pytest.raises(EngineError) as err:
            await eng.generate(_req(0, messages=[ChatMessage("user", "hi")]))
    finally:
        await eng.stop()
    assert not err.value.retryable and "prompt" in err.value.message and stub.calls == []


async def test_a_missing_api_key_variable_stops_the_engine_at_start(stub, monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(RuntimeError, match="NOPE_KEY"):
        await _engine(stub, api_key_env="NOPE_KEY").start()


async def test_through_a_worker_results_carry_text_and_upstream_errors(stub, r, keys):
    models = parse_models(f"""
[models.up]
engine = "openai"
max_inflight = 8
[models.up.options]
base_url = "{stub.base_url}"
backoff_s = 0.01
[models.up.retry]
max_attempts = 2
backoff_s = 0.01
""")
    model = models.get("up")
    await JobStore(r, keys).create("job_o", 0, {"up": 3}, {}, [])
    enc = msgspec.msgpack.Encoder()
    for i, prompt in enumerate(["fine words here", "BAD request", "RATE-LIMIT then fine"]):
        req = msgspec.structs.replace(_req(i, prompt), model="up")
        await r.xadd(keys.model_stream("up", "batch"), {PAYLOAD_FIELD: enc.encode(req)})
    stub.retry_after = "0"
    worker = InferenceWorker(r, keys, model, create_engine(model), block_ms=50)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(250):
        if len(await published_results(r, keys)) >= 3:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await task
    lines = {e.line.custom_id: e.line for e in await published_results(r, keys)}
    assert lines["c0"].status == "succeeded" and lines["c0"].output.text == "here words fine"
    assert lines["c1"].status == "failed" and lines["c1"].error.code == "upstream_400"
    assert "maximum context length" in lines["c1"].error.message
    assert lines["c2"].status == "succeeded" and lines["c2"].usage.completion_tokens == 3
