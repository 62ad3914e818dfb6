"""The `vllm` engine against a stand-in for the `vllm` package (tests/stand_ins), replaced at that
import boundary only: the mapping of messages, sampling fields and outputs, many requests in flight
at once, abort on cancel, and a dead engine taking the worker down without acknowledging."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec
import pytest

from services.inference.engines import EngineDead, create_engine
from services.inference.worker import InferenceWorker
from shared.api import ChatMessage
from shared.jobstore import JobStore
from shared.keys import PAYLOAD_FIELD, WORKER_GROUP
from shared.messages import InferenceRequest, SamplingParams
from shared.models_config import parse_models

STAND_INS = Path(__file__).parent / "stand_ins"
MODELS = parse_models("""
[models.llama]
engine = "vllm"
max_inflight = 64
[models.llama.options]
model = "meta-llama/Llama-3.1-8B-Instruct"
max_model_len = 8192
gpu_memory_utilization = 0.85
""")


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.syspath_prepend(str(STAND_INS))
    yield
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]


@pytest.fixture
async def engine(fake_vllm):
    eng = create_engine(MODELS.get("llama"))
    await eng.start()
    yield eng
    await eng.stop()


def _req(i=0, prompt: str | None = "a b c d", messages=None, **params) -> InferenceRequest:
    return InferenceRequest(request_id=f"req_{i}", job_id="job_v", custom_id=f"c{i}", model="llama", accepted_ms=0,
                            prompt=None if messages else prompt, messages=messages,
                            params=SamplingParams(**{"max_tokens": 3, **params}))


async def test_engine_args_come_from_the_models_file(engine):
    args = engine.engine.args
    assert args.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert args.kwargs["max_model_len"] == 8192 and args.kwargs["gpu_memory_utilization"] == 0.85
    assert args.kwargs["enable_prefix_caching"] is True


async def test_messages_sampling_fields_and_outputs_are_mapped(engine):
    out = await engine.generate(_req(0, messages=[ChatMessage("system", "sys"), ChatMessage("user", "hi there friend")],
                                     temperature=0.3, top_p=0.8, stop=["END"], seed=11, max_tokens=200))
    prompt, params, request_id = engine.engine.calls[-1]
    assert prompt == "<system>sys<user>hi there friend<assistant>"  # the model's chat template
    assert (params.max_tokens, params.temperature, params.top_p, params.stop, params.seed, params.n) == (200, 0.3, 0.8, ["END"], 11, 1)
    assert params.output_kind.name == "FINAL_ONLY" and request_id == "req_0"
    assert out.text == prompt and out.finish_reason == "stop" and (out.prompt_tokens, out.completion_tokens) == (3, 3)

    cut = await engine.generate(_req(1, "one two three four five"))
    _, params, _ = engine.engine.calls[-1]
    assert params.max_tokens == 3  # always set: vLLM's default would be 16
    assert params.temperature == 1.0 and params.seed is None  # unset fields keep vLLM's defaults
    assert cut.text == "one two three" and cut.finish_reason == "length" and cut.completion_tokens == 3


async def test_many_requests_run_at_once(engine):
    outs = await asyncio.gather(*(engine.generate(_req(i)) for i in range(48)))
    assert len(outs) == 48 and engine.engine.max_in_flight == 48  # continuous batching sees them all


async def test_a_cancelled_request_is_aborted_in_vllm(engine):
    engine.engine.delay_s = 5
    task = asyncio.create_task(engine.generate(_req(7)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.engine.aborted == ["req_7"]
    engine.engine.delay_s = 0
    await engine.generate(_req(9))
    assert engine.engine.aborted == ["req_7"]  # finished requests are not aborted


async def test_a_dead_engine_raises_engine_dead(engine):
    engine.engine.die_on = "boom"
    with pytest.raises(EngineDead):
        await engine.generate(_req(0, "boom"))
    with pytest.raises(EngineDead):
        await engine.generate(_req(1, "fine"))


async def test_the_worker_aborts_on_shutdown_and_exits_on_a_dead_engine(fake_vllm, r, keys):
    model = MODELS.get("llama")
    await JobStore(r, keys).create("job_v", 0, {"llama": 4}, {}, [])
    stream = keys.model_stream("llama", "batch")
    enc = msgspec.msgpack.Encoder()
    for i, prompt in enumerate(["slow one", "slow two", "slow three", "boom"]):
        await r.xadd(stream, {PAYLOAD_FIELD: enc.encode(_req(i, prompt))})
    engine = create_engine(model)
    worker = InferenceWorker(r, keys, model, engine, block_ms=50, grace_s=0.2)
    from vllm.v1.engine.async_llm import AsyncLLM

    AsyncLLM.next_settings = {"delay_s": 5, "die_on": "boom"}
    try:
        await asyncio.wait_for(worker.run(asyncio.Event()), 10)  # nothing stops it but the dead engine
    finally:
        AsyncLLM.next_settings = {}
    assert isinstance(worker.fatal, EngineDead)
    assert sorted(AsyncLLM.last.aborted) == ["req_0", "req_1", "req_2", "req_3"]  # every unfinished one
    assert AsyncLLM.last.shut_down
    # nothing acknowledged, nothing handed back: all four stay pending for a reclaim
    assert (await r.xpending(stream, WORKER_GROUP))["pending"] == 4
    assert await r.xlen(keys.results_stream) == 0
