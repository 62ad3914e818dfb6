"""The `vllm` engine on the real AsyncLLM: what a request sees (text, token counts, max_tokens,
stop, greedy repeatability), how vLLM's validation errors surface, that a chat reaches the model
with exactly one BOS, that cancelling aborts the request inside vLLM, and that any AsyncEngineArgs
field in the models file reaches vLLM while unknown names are refused."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from services.inference.engines import EngineError, create_engine
from shared.catalog.models import ModelsFileError, parse_models
from shared.wire.api import ChatMessage
from tests.support.engine_requests import engine_request
from tests.vllm_cpu.conftest import CONTEXT, vllm_models_file

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tiny_llama):
    # max_num_batched_tokens is not one of the engine's typed options: it is passed through
    model = parse_models(vllm_models_file(tiny_llama, extra_options="max_num_batched_tokens = 1024")).get("tiny")
    eng = create_engine(model)
    await eng.start()
    yield eng
    await eng.stop()


async def test_completion_and_chat_return_text_and_token_counts(engine):
    done = await engine.generate(engine_request(1, "a haiku about the ocean", max_tokens=12))
    assert done.text and done.completion_tokens == 12 and done.finish_reason == "length"
    assert done.prompt_tokens == 1 + len(
        engine.engine.renderer.tokenizer.encode("a haiku about the ocean", add_special_tokens=False)
    )
    chat = await engine.generate(
        engine_request(2, messages=[ChatMessage("system", "be brief"), ChatMessage("user", "hello world")])
    )
    assert chat.text and chat.completion_tokens == 8 and chat.prompt_tokens > done.prompt_tokens


async def test_max_tokens_and_stop_are_honoured(engine):
    free = await engine.generate(engine_request(3, "write a short story title", max_tokens=40))
    assert free.completion_tokens == 40 and free.finish_reason == "length"
    stop = free.text[len(free.text) // 2 :][:3]  # a piece of what the model writes at temperature 0
    assert stop.strip()
    cut = await engine.generate(engine_request(4, "write a short story title", max_tokens=40, stop=[stop]))
    assert cut.finish_reason == "stop" and stop not in cut.text
    assert free.text.startswith(cut.text) and cut.completion_tokens < 40


async def test_temperature_zero_gives_the_same_text_twice(engine):
    a, b = await asyncio.gather(
        engine.generate(engine_request(5, "city rain and desert stars", max_tokens=24)),
        engine.generate(engine_request(6, "city rain and desert stars", max_tokens=24)),
    )
    c = await engine.generate(engine_request(7, "city rain and desert stars", max_tokens=24))
    assert a.text == b.text == c.text and a.completion_tokens == 24


async def test_a_chat_reaches_the_model_with_exactly_one_bos(engine):
    tokenizer = engine.engine.renderer.tokenizer
    bos = tokenizer.bos_token_id
    turns = [{"role": "user", "content": "hi there"}]
    rendered = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    # the template writes BOS itself, and the tokenizer adds one to text: tokenizing the rendered
    # chat as a plain prompt would start with two
    assert tokenizer.encode(rendered)[:2] == [bos, bos]

    seen = []
    real_generate = engine.engine.generate

    async def watch(prompt, params, request_id, **kw):
        async for out in real_generate(prompt, params, request_id, **kw):
            seen.append(out)
            yield out

    engine.engine.generate = watch
    try:
        await engine.generate(engine_request(8, messages=[ChatMessage("user", "hi there")]))
        await engine.generate(engine_request(9, "hi there"))
    finally:
        del engine.engine.generate
    chat_ids, text_ids = list(seen[0].prompt_token_ids), list(seen[1].prompt_token_ids)
    assert chat_ids[0] == bos and chat_ids[1] != bos and chat_ids.count(bos) == 1
    assert chat_ids == tokenizer.encode(
        rendered, add_special_tokens=False
    )  # the whole template, generation prompt included
    assert text_ids[0] == bos and text_ids[1] != bos  # a completion gets the model's BOS once too


async def test_a_prompt_longer_than_the_context_is_an_invalid_request(engine):
    with pytest.raises(EngineError) as info:
        await engine.generate(engine_request(10, "the lazy dog " * CONTEXT))
    assert info.value.code == "invalid_request" and not info.value.retryable
    assert f"maximum context length is {CONTEXT} tokens" in info.value.message
    ok = await engine.generate(engine_request(11))  # the engine serves on
    assert ok.completion_tokens == 8


async def test_invalid_sampling_values_are_invalid_requests(engine):
    with pytest.raises(EngineError) as info:
        await engine.generate(engine_request(12, top_p=0.0))
    assert info.value.code == "invalid_request" and "top_p" in info.value.message


async def test_cancelling_aborts_the_requests_inside_vllm(engine):
    vllm = engine.engine
    tasks = [
        asyncio.create_task(engine.generate(engine_request(100 + i, f"mountain trains {i}", max_tokens=CONTEXT - 32)))
        for i in range(16)
    ]
    for _ in range(2000):
        if vllm.output_processor.get_num_unfinished_requests() == 16:
            break
        await asyncio.sleep(0.005)
    assert vllm.output_processor.get_num_unfinished_requests() == 16
    for t in tasks:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert vllm.output_processor.get_num_unfinished_requests() == 0  # nothing left generating
    after = await engine.generate(engine_request(200))
    assert after.completion_tokens == 8


async def test_engine_args_from_the_models_file_reach_vllm(engine):
    config = engine.engine.vllm_config
    assert config.scheduler_config.max_num_batched_tokens == 1024  # passed through as is
    assert config.model_config.max_model_len == CONTEXT and config.model_config.enforce_eager


async def test_an_unknown_engine_arg_is_refused_naming_the_valid_ones(tiny_llama):
    model = parse_models(vllm_models_file(tiny_llama, extra_options="max_num_batched_tokenz = 1024")).get("tiny")
    with pytest.raises(ModelsFileError) as info:
        await create_engine(model).start()
    assert "['max_num_batched_tokenz']" in str(info.value)
    assert "max_num_batched_tokens" in str(info.value) and "kv_cache_dtype" in str(info.value)
