"""response_format on the real vLLM (CPU build, tiny random Llama) through the whole pipeline:
vLLM constrains decoding with xgrammar, the worker validates what comes back. A nested schema
gives 200 valid results of 200 where the same prompts unconstrained give none; every regex output
matches, every choice output is a choice; a schema no output can meet within max_tokens ends
`output_invalid` after its retries, with the raw text."""

from __future__ import annotations

import json
import re

import pytest
from jsonschema import Draft202012Validator

from tests.vllm_cpu.conftest import LOAD_S
from tests.vllm_cpu.test_vllm_pipeline import _results, _wait

pytestmark = pytest.mark.e2e

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"enum": ["billing", "outage", "question", "praise"]},
        "urgency": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,10}$"}, "maxItems": 3},
        "customer": {
            "type": "object",
            "properties": {
                "tier": {"enum": ["free", "pro"]},
                "seats": {"type": "integer", "minimum": 0, "maximum": 999},
            },
            "required": ["tier", "seats"],
            "additionalProperties": False,
        },
    },
    "required": ["label", "urgency", "tags", "customer"],
    "additionalProperties": False,
}
PROMPTS = [f"ticket {i}: the invoice for the city rain order is wrong again" for i in range(200)]


def _run(client, stack, body: dict) -> dict[str, dict]:
    job = client.post("/v1/jobs", json=body)
    assert job.status_code == 202, job.text
    _wait(client, stack, job.json()["id"], ("completed",), LOAD_S)
    return _results(client, job.json()["id"])


def test_a_nested_schema_holds_for_every_result_and_not_without_it(client, stack):
    fmt = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA, "strict": True}}
    requests = [{"custom_id": f"t{i}", "model": "tiny", "prompt": p, "max_tokens": 160} for i, p in enumerate(PROMPTS)]
    held = _run(client, stack, {"requests": requests, "response_format": fmt})
    validator = Draft202012Validator(SCHEMA)
    assert len(held) == 200
    for line in held.values():
        assert line["status"] == "succeeded", (line["error"], line["output"])
        parsed = json.loads(line["output"]["text"])
        assert validator.is_valid(parsed), line["output"]["text"]
        assert list(parsed) == list(SCHEMA["properties"])  # written in the schema's order
        assert line["output"]["parsed"] == parsed
        assert " " not in line["output"]["text"].replace("the ", "")  # compact: no free whitespace

    free = _run(client, stack, {"requests": requests})
    assert all(line["status"] == "succeeded" and "parsed" not in line["output"] for line in free.values())
    would = sum(1 for line in free.values() if _valid_json(validator, line["output"]["text"]))
    print(f"unconstrained: {would} of 200 would have validated")
    assert would < 200


def _valid_json(validator: Draft202012Validator, text: str) -> bool:
    try:
        return validator.is_valid(json.loads(text))
    except ValueError:
        return False


def test_every_regex_output_matches_and_every_choice_output_is_a_choice(client, stack):
    regex = {"type": "regex", "pattern": "^[a-z]{3}-[0-9]{2}$"}
    choices = ["refund", "escalate", "close as duplicate"]
    requests = [
        {"custom_id": f"r{i}", "model": "tiny", "prompt": p, "response_format": regex}
        for i, p in enumerate(PROMPTS[:40])
    ]
    requests += [
        {"custom_id": f"c{i}", "model": "tiny", "prompt": p, "response_format": {"type": "choice", "choices": choices}}
        for i, p in enumerate(PROMPTS[:40])
    ]
    lines = _run(client, stack, {"requests": requests})
    for cid, line in lines.items():
        assert line["status"] == "succeeded", (line["error"], line["output"])
        text = line["output"]["text"]
        if cid.startswith("r"):
            assert re.fullmatch("[a-z]{3}-[0-9]{2}", text), text
        else:
            assert text in choices, text
    assert len({lines[f"c{i}"]["output"]["text"] for i in range(40)}) > 1  # sampled among the choices


def test_a_schema_longer_than_max_tokens_ends_output_invalid_with_the_raw_text(client, stack):
    summary = "the quick brown fox jumps over the lazy dog " * 4
    long = {"type": "object", "properties": {"summary": {"const": summary}}, "required": ["summary"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "long", "schema": long}}
    lines = _run(
        client,
        stack,
        {"requests": [{"custom_id": "cut", "model": "tiny", "prompt": "x", "max_tokens": 6}], "response_format": fmt},
    )
    line = lines["cut"]
    assert line["status"] == "failed" and line["error"]["code"] == "output_invalid", line
    assert "max_tokens" in line["error"]["message"]
    text = line["output"]["text"]  # the start of the one valid output, cut at max_tokens
    assert (
        line["output"]["finish_reason"] == "length"
        and text
        and json.dumps({"summary": summary}, separators=(",", ":")).startswith(text)
    )
    assert line["usage"]["completion_tokens"] == 6 * 3  # every attempt of the default three
