"""The `transformers` engine with a tiny randomly initialised GPT-2-style model built by the test
(tokenizer trained locally, saved, loaded from its path): in-process, then through the full pipeline."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from inferq.localstack import LocalStack
from inferq.tinymodel import build_tiny_model
from services.inference.engines import EngineError, create_engine
from services.inference.engines.transformers_engine import TransformersEngine
from shared.catalog.models import TransformersOptions, parse_models
from shared.wire.api import ChatMessage
from tests.e2e.test_pipeline import _all_results
from tests.support.engine_requests import engine_request


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", context=128)


@pytest.fixture
async def engine(tiny_model):
    eng = TransformersEngine(
        TransformersOptions(model=str(tiny_model), max_batch_size=16, batch_wait_ms=30, local_files_only=True)
    )
    await eng.start()
    yield eng
    await eng.stop()


async def test_concurrent_requests_share_one_generate_call_and_keep_their_own_limits(engine):
    # sampled (temperature unset), each with its own max_tokens
    reqs = [engine_request(i, "hello world " * (i + 1), max_tokens=3 + i, temperature=None) for i in range(6)]
    outs = await asyncio.gather(*(engine.generate(r) for r in reqs))
    assert engine.batch_sizes == [6]  # one left-padded batch for six prompts of different lengths
    for r, out in zip(reqs, outs):
        assert out.prompt_tokens == len(engine.tokenizer(r.prompt)["input_ids"])
        assert 0 <= out.completion_tokens <= r.params.max_tokens
        assert out.finish_reason == ("length" if out.completion_tokens == r.params.max_tokens else "stop")
    assert sum(o.completion_tokens for o in outs) > 0 and any(o.text for o in outs)


async def test_greedy_output_does_not_depend_on_the_batch(engine):
    alone = await engine.generate(engine_request(0, "a haiku about the ocean"))
    together = await asyncio.gather(
        *(
            engine.generate(engine_request(i, p))
            for i, p in enumerate(["a haiku about the ocean", "mountain trains and city rain in autumn", "hello"])
        )
    )
    assert together[0].text == alone.text and together[0].completion_tokens == alone.completion_tokens


async def test_chat_messages_are_rendered_with_the_chat_template(engine):
    messages = [ChatMessage("system", "be brief"), ChatMessage("user", "hello world")]
    out = await engine.generate(engine_request(0, messages=messages))
    rendered = engine.tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|assistant|>")
    assert out.prompt_tokens == len(engine.tokenizer(rendered)["input_ids"])


async def test_stop_sequences_cut_the_text(engine):
    free = await engine.generate(engine_request(0, "desert stars", max_tokens=12))
    assert len(free.text) > 2, "the tiny model produced too little text to cut"
    stop = free.text[1:3]
    cut = await engine.generate(engine_request(1, "desert stars", max_tokens=12, stop=[stop]))
    assert cut.text == free.text[: free.text.find(stop)] and cut.finish_reason == "stop"
    assert cut.completion_tokens <= free.completion_tokens


async def test_sampling_settings_split_batches_and_seeds_reproduce(engine):
    seeded = [engine_request(0, temperature=0.9, seed=7), engine_request(1, temperature=0.9, seed=7)]
    greedy = [engine_request(2), engine_request(3, "hello world")]
    outs = await asyncio.gather(*(engine.generate(r) for r in (*seeded, *greedy)))
    assert sorted(engine.batch_sizes) == [1, 1, 2]  # each seeded request alone; the greedy ones together
    assert outs[0].text == outs[1].text  # same prompt, same seed
    again = await engine.generate(engine_request(4, temperature=0.9, seed=7))
    assert again.text == outs[0].text
    other = [await engine.generate(engine_request(5 + k, temperature=0.9, seed=100 + k)) for k in range(3)]
    assert any(o.text != outs[0].text for o in other)  # the seed matters


async def test_a_prompt_longer_than_the_context_fails_permanently(engine):
    with pytest.raises(EngineError) as err:
        await engine.generate(engine_request(0, "the quick brown fox " * 200))
    assert err.value.code == "context_length_exceeded" and not err.value.retryable
    assert "context is 128" in err.value.message


async def test_a_cancelled_request_is_not_generated(engine):
    engine.options.batch_wait_ms = 200
    task = asyncio.create_task(engine.generate(engine_request(0)))
    keep = asyncio.create_task(engine.generate(engine_request(1)))
    await asyncio.sleep(0.05)
    task.cancel()
    await keep
    assert engine.batch_sizes == [1]


def test_the_models_file_selects_the_engine(tiny_model):
    cfg = parse_models(
        f'[models.tiny]\nengine = "transformers"\n[models.tiny.options]\nmodel = "{tiny_model}"\nmax_batch_size = 4\n'
    )
    eng = create_engine(cfg.get("tiny"))
    assert isinstance(eng, TransformersEngine) and eng.options.max_batch_size == 4


@pytest.mark.e2e
def test_through_the_full_pipeline_with_real_processes(tmp_path, tiny_model):
    models = tmp_path / "models.toml"
    models.write_text(f"""
[models.tiny]
engine = "transformers"
max_inflight = 16
default_max_tokens = 6
[models.tiny.options]
model = "{tiny_model}"
max_batch_size = 16
batch_wait_ms = 50
local_files_only = true
""")
    stack = LocalStack(models, workdir=tmp_path / "stack", env={"INFERQ_LOG_LEVEL": "DEBUG"})
    with stack, httpx.Client(base_url=stack.base_url, timeout=60) as client:
        body = {
            "requests": [{"custom_id": f"p{i}", "model": "tiny", "prompt": f"hello world {i}"} for i in range(20)]
            + [
                {
                    "custom_id": f"m{i}",
                    "model": "tiny",
                    "messages": [{"role": "user", "content": f"a haiku {i}"}],
                    "max_tokens": 4,
                }
                for i in range(12)
            ]
        }
        job_id = client.post("/v1/jobs", json=body).json()["id"]
        deadline = time.monotonic() + 120
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] != "completed":
            stack.check_alive()
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        lines = _all_results(client, job_id)
        assert sorted(l["custom_id"] for l in lines) == sorted(r["custom_id"] for r in body["requests"])
        assert all(l["status"] == "succeeded" and l["usage"]["prompt_tokens"] > 0 for l in lines)
        assert all(l["usage"]["completion_tokens"] <= (6 if l["custom_id"].startswith("p") else 4) for l in lines)
        assert sum(l["usage"]["completion_tokens"] for l in lines) > 0 and any(l["output"]["text"] for l in lines)
        assert job["usage"]["completion_tokens"] == sum(l["usage"]["completion_tokens"] for l in lines)
        sizes = [
            json.loads(l)["batch_size"]
            for l in stack.log_path("worker-tiny-0").read_text().splitlines()
            if l.startswith("{") and json.loads(l).get("msg") == "generate"
        ]
        assert max(sizes) >= 2, f"every generate() call ran a single request: {sizes}"
        assert sum(sizes) == len(lines)
        assert set(stack.stop().values()) == {0}


def test_a_json_object_contract_compiles_to_an_object_grammar_without_free_whitespace(tiny_model):
    import xgrammar as xgr
    from transformers import AutoTokenizer

    from services.inference.engines.transformers_engine import compile_contract
    from shared.wire.contract import Contract

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer))
    grammar = compile_contract(compiler, Contract(kind="json_object"))

    def takes(text: str) -> bool:
        matcher = xgr.GrammarMatcher(grammar)
        return matcher.accept_string(text) and matcher.accept_token(tokenizer.eos_token_id)

    assert takes('{"a": [1, {"b": null}], "c": "x"}') and takes("{}")
    assert not xgr.GrammarMatcher(grammar).accept_string("[1]")  # JSON, but not an object
    assert not xgr.GrammarMatcher(grammar).accept_string('{ "a": 1}')  # no free whitespace
