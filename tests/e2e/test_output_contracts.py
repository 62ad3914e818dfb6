"""`response_format` end to end: real processes on a real redis-server, the real transformers
engine on a tiny random model (its grammar makes noise keep the contract), the OpenAI SDK's
batches, and the openai engine passing the contract to a stand-in upstream. One stack serves
every test of the module."""

from __future__ import annotations

import hashlib
import json
import re
import time

import httpx
import msgspec
import openai
import pytest
import redis
from jsonschema import Draft202012Validator

from inferq.localstack import LocalStack
from inferq.tinymodel import build_tiny_model
from shared.redis.keys import Keys, lane_entry_payloads
from shared.wire.messages import InferenceRequest
from tests.e2e.test_pipeline import _all_results
from tests.support.openai_server import OpenAIStub

pytestmark = pytest.mark.e2e

MAX_ATTEMPTS = 6  # tiny's: a miss (an output cut at max_tokens) runs again up to this many times
UPSTREAM_ATTEMPTS = 3
RETRY_MSG = "output misses its contract; running it again"

# Every keyword kind the grammar holds: an enum, an integer range, an array of pattern-bounded
# strings with maxItems, a nested object, required fields, no additional properties. Strings are
# bounded by pattern (not maxLength) so the tiny model's noise cannot run past max_tokens.
SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"enum": ["spam", "ham", "other"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,6}$"}, "maxItems": 2},
        "meta": {
            "type": "object",
            "properties": {"lang": {"enum": ["en", "fr"]}, "draft": {"type": "boolean"}},
            "required": ["lang", "draft"],
            "additionalProperties": False,
        },
    },
    "required": ["label", "score", "tags", "meta"],
    "additionalProperties": False,
}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "triage", "schema": SCHEMA}}
VALIDATOR = Draft202012Validator(SCHEMA)


def _models_toml(model: str, upstream: str) -> str:
    return f"""
[models.tiny]
engine = "transformers"
max_inflight = 64
default_max_tokens = 120
[models.tiny.options]
model = "{model}"
max_batch_size = 64
batch_wait_ms = 50
local_files_only = true
[models.tiny.retry]
max_attempts = {MAX_ATTEMPTS}
backoff_s = 0

# no worker runs for it (see the stack fixture): its requests stay in their lane stream
[models.parked]
engine = "transformers"
[models.parked.options]
model = "{model}"
local_files_only = true

[models.upstream]
engine = "openai"
default_max_tokens = 16
[models.upstream.options]
base_url = "{upstream}"
max_retries = 0
[models.upstream.retry]
max_attempts = {UPSTREAM_ATTEMPTS}
backoff_s = 0
"""


@pytest.fixture(scope="module")
def upstream():
    with OpenAIStub() as stub:  # answers a prompt's words reversed: a one-word prompt comes back as is
        yield stub


@pytest.fixture(scope="module")
def stack(tmp_path_factory, upstream):
    tmp = tmp_path_factory.mktemp("contracts")
    model = build_tiny_model(tmp / "model", context=256)
    models = tmp / "models.toml"
    models.write_text(_models_toml(str(model), upstream.base_url))
    with LocalStack(models, workdir=tmp / "stack", models=["tiny", "upstream"]) as running:
        yield running
        assert set(running.stop().values()) == {0}


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack.base_url, timeout=60) as c:
        yield c


def _submit(client: httpx.Client, body: dict) -> str:
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code in (200, 201, 202), resp.text
    return resp.json()["id"]


def _finished(client: httpx.Client, stack: LocalStack, job_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "in_progress"):
        stack.check_alive()
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def _run(client: httpx.Client, stack: LocalStack, body: dict) -> tuple[dict, dict[str, dict]]:
    job_id = _submit(client, body)
    job = _finished(client, stack, job_id)
    return job, {line["custom_id"]: line for line in _all_results(client, job_id)}


def _keeps_schema(text: str) -> bool:
    try:
        return VALIDATOR.is_valid(json.loads(text))
    except ValueError:
        return False


def _log_records(stack: LocalStack, worker: str) -> list[dict]:
    lines = stack.log_path(worker).read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_a_job_level_schema_holds_every_output_of_a_job(stack, client):
    prompts = [f"triage message number {i} " + "the quick brown fox " * (i % 4) for i in range(200)]
    body = {
        "response_format": SCHEMA_FORMAT,
        "requests": [{"custom_id": f"s{i}", "model": "tiny", "prompt": p} for i, p in enumerate(prompts)],
    }
    job, lines = _run(client, stack, body)
    assert job["status"] == "completed" and job["request_counts"]["succeeded"] == 200, job["request_counts"]
    assert sorted(lines) == sorted(f"s{i}" for i in range(200))
    for line in lines.values():
        assert line["status"] == "succeeded" and line["error"] is None, line
        decoded = json.loads(line["output"]["text"])
        VALIDATOR.validate(decoded)
        assert line["output"]["parsed"] == decoded
        # written in the schema's property order, as OpenAI's structured outputs are
        assert list(decoded) == ["label", "score", "tags", "meta"] and list(decoded["meta"]) == ["lang", "draft"]
    assert len({line["output"]["text"] for line in lines.values()}) > 20, "the model was not sampling"
    again = [
        r for r in _log_records(stack, "worker-tiny-0") if r.get("msg") == RETRY_MSG and r.get("job_id") == job["id"]
    ]
    print(f"{len(again)} of 200 outputs held to the schema ran again (cut at max_tokens)")

    # the job's hash holds the contract once, by the id of its canonical JSON
    r = redis.Redis.from_url(stack.redis_url)
    try:
        fields = [f for f in r.hkeys(Keys().job(job["id"])) if f.startswith(b"contract:")]
        assert len(fields) == 1, fields
        stored = r.hget(Keys().job(job["id"]), fields[0])
        assert json.loads(stored) == {"kind": "json_schema", "schema": SCHEMA, "name": "triage"}
        assert fields[0] == b"contract:" + hashlib.sha256(stored).hexdigest()[:16].encode()
    finally:
        r.close()

    # the same prompts without a contract: the noise keeps the schema (next to) never
    free, free_lines = _run(
        client,
        stack,
        {"requests": [{"custom_id": f"f{i}", "model": "tiny", "prompt": p} for i, p in enumerate(prompts)]},
    )
    assert free["request_counts"]["succeeded"] == 200, free["request_counts"]
    assert all("parsed" not in line["output"] for line in free_lines.values())
    valid = sum(_keeps_schema(line["output"]["text"]) for line in free_lines.values())
    print(f"{valid} of 200 outputs without a contract keep the schema")
    assert valid < 200


def test_requests_in_their_lane_stream_carry_the_contract_id_not_the_schema(stack, client):
    marker = "zebra-crossing-marker"
    schema = {"type": "object", "properties": {"k": {"enum": [marker]}}, "required": ["k"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "parked", "schema": schema}}
    job_id = _submit(
        client, {"response_format": fmt, "requests": [{"model": "parked", "prompt": f"p {i}"} for i in range(30)]}
    )
    r = redis.Redis.from_url(stack.redis_url)
    try:
        stream = Keys().model_stream("parked", "batch")
        deadline = time.monotonic() + 20
        while len(payloads := [p for _, f in r.xrange(stream) for p in lane_entry_payloads(f)]) < 30:
            assert time.monotonic() < deadline, len(payloads)
            time.sleep(0.1)
        fields = {f.decode(): v for f, v in r.hgetall(Keys().job(job_id)).items() if f.startswith(b"contract:")}
    finally:
        r.close()
    assert len(payloads) == 30 and len(fields) == 1
    (field,) = fields
    assert marker in fields[field].decode()
    for raw in payloads:
        assert marker.encode() not in raw and b"json_schema" not in raw
        assert f"contract:{msgspec.msgpack.decode(raw, type=InferenceRequest).contract}" == field


def test_regex_and_choice_contracts(stack, client):
    body = {
        "requests": [
            {
                "custom_id": f"r{i}",
                "model": "tiny",
                "prompt": f"a code {i}",
                "response_format": {"type": "regex", "pattern": "^[a-z]{3}-[0-9]{2}$"},
            }
            for i in range(20)
        ]
        + [
            {
                "custom_id": f"c{i}",
                "model": "tiny",
                "prompt": f"a choice {i}",
                "response_format": {"type": "choice", "choices": ["yes", "no", "maybe so"]},
            }
            for i in range(20)
        ]
    }
    job, lines = _run(client, stack, body)
    assert job["request_counts"]["succeeded"] == 40, job["request_counts"]
    codes = [lines[f"r{i}"]["output"]["text"] for i in range(20)]
    choices = [lines[f"c{i}"]["output"]["text"] for i in range(20)]
    assert all(re.fullmatch(r"[a-z]{3}-[0-9]{2}", c) for c in codes), codes
    assert all(c in ("yes", "no", "maybe so") for c in choices), choices
    assert len(set(codes)) > 1 and len(set(choices)) > 1, "the model was not sampling"
    assert all("parsed" not in lines[k]["output"] for k in lines)  # only JSON contracts parse


def test_an_output_cut_at_max_tokens_is_retried_then_fails_output_invalid(stack, client):
    motto = "the quick brown fox jumps over the lazy dog"
    schema = {
        "type": "object",
        "properties": {"motto": {"const": motto}},
        "required": ["motto"],
        "additionalProperties": False,
    }
    body = {
        "response_format": {"type": "json_schema", "json_schema": {"name": "motto", "schema": schema}},
        "requests": [
            {"custom_id": f"t{i}", "model": "tiny", "prompt": f"say it {i}", "max_tokens": 5} for i in range(3)
        ]
        + [
            {
                "custom_id": "free",
                "model": "tiny",
                "prompt": "no contract",
                "max_tokens": 5,
                "response_format": {"type": "text"},
            }
        ],
    }
    job, lines = _run(client, stack, body)
    assert job["request_counts"]["failed"] == 3 and job["request_counts"]["succeeded"] == 1, job["request_counts"]
    assert lines["free"]["status"] == "succeeded" and lines["free"]["error"] is None
    retries = [
        rec
        for rec in _log_records(stack, "worker-tiny-0")
        if rec.get("msg") == RETRY_MSG and rec.get("job_id") == job["id"]
    ]
    for i in range(3):
        line = lines[f"t{i}"]
        assert line["status"] == "failed" and line["error"]["code"] == "output_invalid", line
        assert "(the output ended at max_tokens)" in line["error"]["message"]
        text = line["output"]["text"]
        assert text and json.dumps({"motto": motto}, separators=(",", ":")).startswith(text), text
        assert line["output"]["finish_reason"] == "length" and "parsed" not in line["output"]
        assert line["usage"]["completion_tokens"] == 5 * MAX_ATTEMPTS  # every attempt counted
        attempts = sorted(rec["attempt"] for rec in retries if rec.get("request_id") == line["request_id"])
        assert attempts == list(range(1, MAX_ATTEMPTS)), attempts  # then the last attempt failed it


def test_a_greedy_or_seeded_output_that_misses_is_not_run_again(stack, client):
    schema = {"type": "object", "properties": {"motto": {"const": "x" * 40}}, "required": ["motto"]}
    body = {
        "response_format": {"type": "json_schema", "json_schema": {"name": "once", "schema": schema}},
        "requests": [
            {"custom_id": "greedy", "model": "tiny", "prompt": "a", "max_tokens": 5, "temperature": 0},
            {"custom_id": "seeded", "model": "tiny", "prompt": "b", "max_tokens": 5, "seed": 7},
        ],
    }
    job, lines = _run(client, stack, body)
    for name in ("greedy", "seeded"):  # the same output again would miss again: one attempt, one charge
        assert lines[name]["error"]["code"] == "output_invalid", lines[name]
        assert lines[name]["usage"]["completion_tokens"] == 5, lines[name]["usage"]
    assert not [
        rec
        for rec in _log_records(stack, "worker-tiny-0")
        if rec.get("msg") == RETRY_MSG and rec.get("job_id") == job["id"]
    ]


def test_the_openai_sdk_runs_a_batch_whose_lines_carry_a_schema(stack):
    lines = [
        {
            "custom_id": f"b{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "tiny",
                "messages": [{"role": "user", "content": f"triage ticket {i}"}],
                "max_tokens": 120,
                "response_format": SCHEMA_FORMAT,
            },
        }
        for i in range(24)
    ]
    cut = {**lines[0], "custom_id": "cut", "body": {**lines[0]["body"], "max_tokens": 3}}  # no valid output fits
    lines.append(cut)
    sdk = openai.OpenAI(base_url=stack.base_url + "/v1", api_key="not-needed-locally", max_retries=0)
    upload = sdk.files.create(
        file=("batch.jsonl", b"".join(json.dumps(line).encode() + b"\n" for line in lines)), purpose="batch"
    )
    batch = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 60
    while (batch := sdk.batches.retrieve(batch.id)).status != "completed":
        assert batch.status in ("validating", "in_progress", "finalizing") and time.monotonic() < deadline, batch
        stack.check_alive()
        time.sleep(0.2)
    assert batch.request_counts.completed == 24 and batch.request_counts.failed == 1
    [error] = [json.loads(line) for line in sdk.files.content(batch.error_file_id).text.splitlines()]
    assert error["custom_id"] == "cut" and error["error"]["code"] == "output_invalid", error
    assert "max_tokens" in error["error"]["message"]
    out = [json.loads(line) for line in sdk.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(line["custom_id"] for line in out) == sorted(f"b{i}" for i in range(24))
    for line in out:
        assert line["error"] is None and line["response"]["status_code"] == 200
        VALIDATOR.validate(json.loads(line["response"]["body"]["choices"][0]["message"]["content"]))


def test_the_openai_engine_passes_the_schema_upstream_and_validates_what_comes_back(stack, client, upstream):
    place = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    number = {"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]}
    own = {"type": "json_schema", "json_schema": {"name": "number", "schema": number}}
    upstream.calls.clear()
    body = {  # the stand-in answers a one-word prompt with the prompt itself
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": place}},
        "requests": [
            {"custom_id": "valid", "model": "upstream", "prompt": '{"city":"paris"}'},
            {"custom_id": "prose", "model": "upstream", "prompt": "paris is lovely"},
            {"custom_id": "wrong", "model": "upstream", "prompt": '{"city":7}'},
            {"custom_id": "real", "model": "upstream", "prompt": '{"n":1.5}', "response_format": own},
            # Python's json.loads takes NaN; JSON has no NaN (the result would carry null)
            {"custom_id": "nan", "model": "upstream", "prompt": '{"n":NaN}', "response_format": own},
        ],
    }
    job, lines = _run(client, stack, body)
    assert job["request_counts"]["succeeded"] == 2 and job["request_counts"]["failed"] == 3, job["request_counts"]

    for name, text, parsed in (("valid", '{"city":"paris"}', {"city": "paris"}), ("real", '{"n":1.5}', {"n": 1.5})):
        assert lines[name]["status"] == "succeeded", lines[name]
        assert lines[name]["output"]["text"] == text and lines[name]["output"]["parsed"] == parsed

    for name, text, why in (
        ("prose", "lovely is paris", "the output is not JSON"),
        ("wrong", '{"city":7}', "the output does not match the schema at $['city']: 7 is not of type 'string'"),
        ("nan", '{"n":NaN}', "the output is not JSON: NaN is not a JSON value"),
    ):
        line = lines[name]
        assert line["status"] == "failed" and line["error"]["code"] == "output_invalid", line
        assert line["output"]["text"] == text and "parsed" not in line["output"]
        assert why in line["error"]["message"], line["error"]

    by_prompt: dict[str, list[dict]] = {}
    for call in upstream.calls:
        by_prompt.setdefault(call["body"]["prompt"], []).append(call["body"])
    assert {p: len(b) for p, b in by_prompt.items()} == {
        '{"city":"paris"}': 1,
        "paris is lovely": UPSTREAM_ATTEMPTS,
        '{"city":7}': UPSTREAM_ATTEMPTS,
        '{"n":1.5}': 1,
        '{"n":NaN}': UPSTREAM_ATTEMPTS,
    }
    for prompt, bodies in by_prompt.items():
        schema, name = (number, "number") if prompt.startswith('{"n"') else (place, "place")
        sent = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}  # as written: no strict
        assert all(b["response_format"] == sent for b in bodies), bodies
