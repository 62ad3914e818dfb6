"""The `vllm` engine behaves as vLLM's own OpenAI server would for the same model and request: a
request that leaves sampling fields unset gets the model's generation_config defaults (vLLM's
server does; a bare SamplingParams would sample at temperature 1.0), and with priority scheduling
configured an interactive request overtakes batch requests queued before it."""

from __future__ import annotations

import asyncio
import json
import shutil

import msgspec
import pytest
import pytest_asyncio

from services.inference.engines import create_engine
from shared.catalog.models import parse_models
from shared.wire.api import ChatMessage
from shared.wire.messages import InferenceRequest
from tests.support.engine_requests import engine_request
from tests.vllm_cpu.conftest import vllm_models_file

pytestmark = pytest.mark.asyncio(loop_scope="module")
GENERATION_CONFIG = {"temperature": 0.6, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.05}


@pytest.fixture(scope="module")
def tuned_llama(tiny_llama, tmp_path_factory):
    """The tiny model with sampling defaults in its generation_config.json, as instruct models ship."""
    path = tmp_path_factory.mktemp("tuned") / "model"
    shutil.copytree(tiny_llama, path)
    config = (
        json.loads((path / "generation_config.json").read_text()) if (path / "generation_config.json").exists() else {}
    )
    (path / "generation_config.json").write_text(json.dumps({**config, **GENERATION_CONFIG}))
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tuned_llama):
    eng = create_engine(parse_models(vllm_models_file(tuned_llama)).get("tiny"))
    await eng.start()
    yield eng
    await eng.stop()


def _request(i: int, **params) -> InferenceRequest:
    """A completion that sets only what `params` name (no temperature unless given)."""
    return engine_request(i, "a haiku about the ocean", **{"temperature": None, **params})


def _fields(params) -> dict:
    """What the engine samples with; `skip_clone` is the server's note to itself that the object
    is fresh (it never copies it), not a sampling setting."""
    fields = msgspec.structs.asdict(params)
    fields.pop("skip_clone")
    return fields


async def test_unset_sampling_fields_are_what_vllms_server_builds(engine):
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    defaults = engine.engine.model_config.get_diff_sampling_param()  # what vLLM's server reads at start
    assert defaults == GENERATION_CONFIG
    server = CompletionRequest(model="tiny", prompt="a haiku about the ocean", max_tokens=8)
    ours = engine.sampling_params(_request(1))
    assert _fields(ours) == _fields(server.to_sampling_params(8, defaults))
    assert ours.temperature == 0.6 and ours.top_k == 20  # not 1.0 and 0, a bare SamplingParams' values

    chat = ChatCompletionRequest(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=8, seed=3)
    req = _request(2, seed=3)
    req.messages, req.prompt = [ChatMessage("user", "hi")], None
    assert _fields(engine.sampling_params(req)) == _fields(chat.to_sampling_params(8, defaults))

    # a field the request sets wins over the model's default, as in vLLM's server
    server = CompletionRequest(model="tiny", prompt="x", max_tokens=8, temperature=0.0, top_p=0.5, stop=["."])
    ours = engine.sampling_params(_request(3, temperature=0.0, top_p=0.5, stop=["."]))
    assert _fields(ours) == _fields(server.to_sampling_params(8, defaults))
    done = await engine.generate(_request(4, temperature=0.0))
    assert done.completion_tokens == 8


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def one_at_a_time(tiny_llama):
    """An engine that runs one sequence at a time and schedules by priority."""
    options = 'max_num_seqs = 1\nscheduling_policy = "priority"'
    eng = create_engine(parse_models(vllm_models_file(tiny_llama, extra_options=options)).get("tiny"))
    await eng.start()
    yield eng
    await eng.stop()


async def test_an_interactive_request_overtakes_queued_batch_requests(one_at_a_time):
    finished: list[str] = []
    first_done = asyncio.Event()

    async def run(i: int, lane: str) -> None:
        await one_at_a_time.generate(_request(i, temperature=0.0, max_tokens=64), lane)
        finished.append(f"{lane}-{i}")
        first_done.set()

    batch = [asyncio.create_task(run(i, "batch")) for i in range(6)]
    await first_done.wait()  # one batch request done, the next running, four waiting inside vLLM
    interactive = asyncio.create_task(run(9, "interactive"))
    await asyncio.gather(*batch, interactive)
    # right after the one running when it arrived (arrival order would make it last)
    assert finished.index("interactive-9") <= 2, finished
