"""A dead vLLM engine, the one fault the real engine cannot be made to show on demand, against a
stand-in for the `vllm` package (tests/support/stand_ins) replaced at that import boundary only: the
engine raises EngineDead, and the worker aborts what it holds and exits without acknowledging.
Everything else about the engine runs on the real vLLM in tests/vllm_cpu/."""

from __future__ import annotations

import asyncio
import sys

import msgspec
import pytest

from services.inference.engines import EngineDead, create_engine
from services.inference.worker import InferenceWorker
from shared.catalog.models import parse_models
from shared.jobs.store import JobStore
from shared.redis.keys import PAYLOAD_FIELD, WORKER_GROUP
from shared.wire.messages import InferenceRequest, SamplingParams
from tests.conftest import ROOT

STAND_INS = ROOT / "tests" / "support" / "stand_ins"
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
    return InferenceRequest(
        request_id=f"req_{i}",
        job_id="job_v",
        custom_id=f"c{i}",
        model="llama",
        accepted_ms=0,
        prompt=None if messages else prompt,
        messages=messages,
        params=SamplingParams(**{"max_tokens": 3, **params}),
    )


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
