from services.inference.engines.dummy import DummyEngine
from shared.catalog.models import DummyOptions
from shared.wire.api import ChatMessage
from shared.wire.messages import InferenceRequest, SamplingParams


def _req(prompt=None, messages=None, max_tokens=16, stop=None):
    return InferenceRequest(
        request_id="r",
        job_id="j",
        custom_id="c",
        model="m",
        accepted_ms=0,
        prompt=prompt,
        messages=messages,
        params=SamplingParams(max_tokens=max_tokens, stop=stop),
    )


async def test_echoes_prompt_and_counts_words():
    gen = await DummyEngine(DummyOptions()).generate(_req("the quick brown fox"))
    assert (gen.text, gen.finish_reason, gen.prompt_tokens, gen.completion_tokens) == (
        "the quick brown fox",
        "stop",
        4,
        4,
    )


async def test_max_tokens_cuts_with_length():
    gen = await DummyEngine(DummyOptions()).generate(_req("a b c d e", max_tokens=2))
    assert (gen.text, gen.finish_reason, gen.completion_tokens) == ("a b", "length", 2)


async def test_stop_sequence_and_chat_messages():
    msgs = [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="one two STOP three")]
    gen = await DummyEngine(DummyOptions()).generate(_req(messages=msgs, stop=["STOP"]))
    assert gen.text.strip() == "one two" and gen.finish_reason == "stop" and gen.prompt_tokens == 6
