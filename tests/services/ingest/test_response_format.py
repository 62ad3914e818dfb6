"""`response_format` through the HTTP API against a real Redis: each kind is accepted and stored once
per job (requests carry only its id), every refusal is a 422 naming the field and request index with
nothing written, and GET /v1/models says which models can hold outputs to one."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest

from services.ingest.app import create_app
from services.ingest.contract_check import MAX_SCHEMA_BYTES
from shared.catalog.models import parse_models
from shared.redis.keys import PAYLOAD_FIELD, contract_field
from shared.wire import contract as contracts
from tests.support.accepted import accepted

MODELS = """
[models.tf]
engine = "transformers"
max_inflight = 8
[models.tf.options]
model = "some/path"

[models.dum]
engine = "dummy"
max_inflight = 8

[models.tf-chain]
engine = "transformers"
max_inflight = 8
fallback = ["dum"]
[models.tf-chain.options]
model = "some/path"

[models.oa]
engine = "openai"
[models.oa.options]
base_url = "http://127.0.0.1:9/v1"

[models.tf-oa]
engine = "transformers"
fallback = ["oa"]
[models.tf-oa.options]
model = "some/path"
"""

MARKER = "zebra_marker_property"  # a property name found nowhere but in the schema's text
SCHEMA = {
    "type": "object",
    "properties": {MARKER: {"type": "string"}, "score": {"type": "integer", "minimum": 0, "maximum": 10}},
    "required": [MARKER, "score"],
}
OTHER_SCHEMA = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]}


@pytest.fixture
def contract_models(tmp_path):
    path = tmp_path / "contract-models.toml"
    path.write_text(MODELS)
    return path, parse_models(MODELS, str(path))


@pytest.fixture
async def api(r, settings, contract_models):
    path, models = contract_models
    settings = msgspec.structs.replace(settings, models_path=str(path))
    app = create_app(settings, models)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client


def _req(model: str = "tf", **extra) -> dict:
    return {"model": model, "prompt": "hello", **extra}


def _schema_format(schema: dict, name: str = "answer") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


VALID_FORMATS = [
    ("json_object", {"type": "json_object"}, "json_object"),
    ("json_schema", _schema_format(SCHEMA), "json_schema"),
    (
        "json_schema strict",
        {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}},
        "json_schema",
    ),
    ("regex", {"type": "regex", "pattern": r"^\d{3}-[a-z]+$"}, "regex"),
    ("choice", {"type": "choice", "choices": ["yes", "no", "maybe"]}, "choice"),
    ("text", {"type": "text"}, None),
]


async def _contract_fields(r, keys, job_id: str) -> dict[str, bytes]:
    fields = await r.hgetall(keys.job(job_id))
    return {k.decode(): v for k, v in fields.items() if k.startswith(b"contract:")}


@pytest.mark.parametrize("name, fmt, kind", VALID_FORMATS, ids=[c[0] for c in VALID_FORMATS])
@pytest.mark.parametrize("level", ["request", "job"])
async def test_each_kind_is_accepted_and_stored_once(api, r, keys, name, fmt, kind, level):
    if level == "request":
        body = {"requests": [_req(), _req(response_format=fmt), _req()]}
    else:
        body = {"requests": [_req(), _req(), _req()], "response_format": fmt}
    resp = await api.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    stored = await _contract_fields(r, keys, job_id)
    reqs = await accepted(r, keys)
    assert len(reqs) == 3
    if kind is None:  # free text is no contract at all
        assert stored == {} and [q.contract for q in reqs] == [None, None, None]
        return
    [(field, encoded)] = stored.items()
    contract = contracts.decode(encoded)
    assert contract.kind == kind
    cid = contracts.contract_id(encoded)
    assert field == contract_field(cid)
    expected = [None, cid, None] if level == "request" else [cid, cid, cid]
    assert [q.contract for q in reqs] == expected
    if kind == "regex":
        assert contract.pattern == r"\d{3}-[a-z]+"  # stored unanchored
    if kind == "json_schema":
        assert contract.schema == SCHEMA


@pytest.mark.parametrize("n", [50, 600])  # 600: past the first chunk of 500, some go via the ingest stream
async def test_requests_sharing_the_job_schema_store_it_once_and_carry_only_its_id(api, r, keys, n):
    body = {"requests": [_req(custom_id=f"c{i}") for i in range(n)], "response_format": _schema_format(SCHEMA)}
    resp = await api.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    stored = await _contract_fields(r, keys, resp.json()["id"])
    assert len(stored) == 1
    [field] = stored
    cid = field.removeprefix("contract:")

    reqs = await accepted(r, keys)
    assert len(reqs) == n and {q.contract for q in reqs} == {cid}

    # the encoded requests where they went: straight to the lane stream, and (past the first chunk)
    # in ingest chunks for the router
    direct = [f[PAYLOAD_FIELD.encode()] for s in keys.model_streams("tf") for _, f in await r.xrange(s)]
    routed = [f[PAYLOAD_FIELD.encode()] for _, f in await r.xrange(keys.ingest_stream)]
    assert direct and bool(routed) == (n > 500)
    raws = direct + routed
    assert raws and all(cid.encode() in raw for raw in raws)
    assert not any(MARKER.encode() in raw for raw in raws), "the schema's text must not travel with each request"


async def test_a_request_with_its_own_schema_and_the_job_schema_store_two(api, r, keys):
    body = {
        "requests": [_req(), _req(), _req(response_format=_schema_format(OTHER_SCHEMA, "other")), _req()],
        "response_format": _schema_format(SCHEMA),
    }
    resp = await api.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    stored = await _contract_fields(r, keys, resp.json()["id"])
    assert len(stored) == 2
    by_schema = {
        json.dumps(contracts.decode(v).schema, sort_keys=True): k.removeprefix("contract:") for k, v in stored.items()
    }
    job_cid = by_schema[json.dumps(SCHEMA, sort_keys=True)]
    own_cid = by_schema[json.dumps(OTHER_SCHEMA, sort_keys=True)]
    assert [q.contract for q in await accepted(r, keys)] == [job_cid, job_cid, own_cid, job_cid]


async def test_the_same_schema_on_two_requests_is_stored_once(api, r, keys):
    fmt = _schema_format(OTHER_SCHEMA, "other")
    resp = await api.post("/v1/jobs", json={"requests": [_req(response_format=fmt), _req(), _req(response_format=fmt)]})
    assert resp.status_code == 202, resp.text
    assert len(await _contract_fields(r, keys, resp.json()["id"])) == 1


def _at(i: int, fmt: dict, model: str = "tf") -> dict:
    """A job of four requests, the one at `i` with `fmt`."""
    return {"requests": [_req(model=model, response_format=fmt) if j == i else _req() for j in range(4)]}


BIG = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(200)}}
assert len(json.dumps(BIG)) > MAX_SCHEMA_BYTES
DEEP = {
    "type": "object",
    "properties": {
        "a": {
            "type": "object",
            "properties": {
                "b": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}},
                }
            },
        }
    },
}
P = "requests[2].response_format"
S = f"{P}.json_schema.schema"

# deeper than Python's recursion limit and within the size limit; as bytes (json.dumps recurses)
NESTED = (
    b'{"requests": [{"model": "tf", "prompt": "a"}, {"model": "tf", "prompt": "b"}, {"model": "tf", "prompt": "c",'
    b' "response_format": {"type": "json_schema", "json_schema": {"name": "deep", "schema": '
    + b'{"items": ' * 3000
    + b"{}"
    + b"}" * 3000
    + b"}}}]}"
)

# within Python's recursion limit, beyond what a grammar or the limit takes
NESTED_200 = json.dumps(_at(2, _schema_format(json.loads('{"items": ' * 200 + "{}" + "}" * 200)))).encode()


async def test_a_body_nested_deeper_than_the_decoder_reads_is_a_400_and_writes_nothing(api, r):
    size = await r.dbsize()
    resp = await api.post("/v1/jobs", content=NESTED, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["field"] == "body" and "nests too deeply" in resp.json()["error"]["message"]
    assert await r.dbsize() == size


REFUSALS = [
    # (name, body, field, index, message fragments)
    ("schema nested 200 deep", NESTED_200, S, 2, ["nests deeper than 64 JSON levels"]),
    ("invalid json schema", _at(2, _schema_format({"type": 5})), f"{S}.type", 2, ["not a valid JSON Schema"]),
    ("schema too large", _at(2, _schema_format(BIG)), S, 2, ["bytes encoded", f"limit of {MAX_SCHEMA_BYTES}"]),
    (
        "uniqueItems",
        _at(2, _schema_format({"type": "array", "uniqueItems": True})),
        f"{S}.uniqueItems",
        2,
        ["'uniqueItems' cannot be enforced"],
    ),
    ("not", _at(2, _schema_format({"not": {"type": "string"}})), f"{S}.not", 2, ["'not' cannot be enforced"]),
    (
        "if",
        _at(2, _schema_format({"if": {"type": "string"}, "then": {"minLength": 1}})),
        f"{S}.if",
        2,
        ["'if' cannot be enforced"],
    ),
    (
        "nested keyword",
        _at(2, _schema_format(DEEP)),
        f"{S}.properties.a.properties.b.items.properties.tags.uniqueItems",
        2,
        ["'uniqueItems'"],
    ),
    (
        "pattern and maxLength",
        _at(2, _schema_format({"type": "string", "pattern": "[a-z]+", "maxLength": 5})),
        f"{S}.pattern",
        2,
        ["cannot also bound its length"],
    ),
    (
        "unknown format",
        _at(2, _schema_format({"type": "string", "format": "credit-card"})),
        f"{S}.format",
        2,
        ["'credit-card' cannot be enforced"],
    ),
    (
        "remote ref",
        _at(2, _schema_format({"$ref": "https://example.com/s.json"})),
        f"{S}.$ref",
        2,
        ["references are supported", "https://example.com/s.json"],
    ),
    (
        "invalid regex",
        _at(2, {"type": "regex", "pattern": "a(b"}),
        f"{P}.pattern",
        2,
        ["not a valid regular expression"],
    ),
    ("regex lookahead", _at(2, {"type": "regex", "pattern": "(?=a)a+"}), f"{P}.pattern", 2, ["'(?='", "lookarounds"]),
    (
        "duplicate choices",
        _at(2, {"type": "choice", "choices": ["yes", "no", "yes"]}),
        f"{P}.choices[2]",
        2,
        ["duplicate choice 'yes'"],
    ),
    ("empty choices", _at(2, {"type": "choice", "choices": []}), f"{P}.choices", 2, ["length >= 1"]),
    ("unknown type tag", _at(2, {"type": "xml"}), f"{P}.type", 2, ["Invalid value 'xml'"]),
    (
        "job-level invalid schema",
        {"requests": [_req(), _req()], "response_format": _schema_format({"type": "array", "uniqueItems": True})},
        "response_format.json_schema.schema.uniqueItems",
        None,
        ["'uniqueItems'"],
    ),
    (
        "contract on dummy",
        _at(2, {"type": "json_object"}, model="dum"),
        P,
        2,
        ["model 'dum'", "its engine (dummy) cannot"],
    ),
    (
        "chain reaches dummy",
        _at(2, {"type": "choice", "choices": ["a", "b"]}, model="tf-chain"),
        P,
        2,
        ["model 'tf-chain'", "fallback chain reaches 'dum'"],
    ),
    (
        "job-level contract, one request on dummy",
        {"requests": [_req(), _req(), _req(model="dum"), _req()], "response_format": {"type": "json_object"}},
        "response_format",
        2,
        ["model 'dum'", "cannot"],
    ),
]


async def _snapshot(r) -> dict[bytes, bytes]:
    return {k: await r.dump(k) async for k in r.scan_iter()}


@pytest.mark.parametrize("name, body, field, index, fragments", REFUSALS, ids=[c[0] for c in REFUSALS])
async def test_a_refused_response_format_is_a_422_naming_field_and_index_and_writes_nothing(
    api, r, keys, name, body, field, index, fragments
):
    # an earlier job is there, so "nothing written" also covers keys that exist already
    assert (
        await api.post("/v1/jobs", json={"requests": [_req()], "response_format": {"type": "json_object"}})
    ).status_code == 202
    before, size = await _snapshot(r), await r.dbsize()
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await api.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err.get("field") == field
    assert err.get("index") == index
    for fragment in fragments:
        assert fragment in err["message"], err["message"]
    assert await r.dbsize() == size and await _snapshot(r) == before, "a refused job must write nothing"


async def test_a_request_of_its_own_free_text_opts_out_of_the_job_contract(api, r, keys):
    body = {
        "requests": [_req(), _req(), _req(model="dum", response_format={"type": "text"})],
        "response_format": {"type": "json_object"},
    }
    resp = await api.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    [field] = await _contract_fields(r, keys, resp.json()["id"])
    cid = field.removeprefix("contract:")
    assert [q.contract for q in await accepted(r, keys)] == [cid, cid, None]


async def test_a_model_refusal_names_the_model(api):
    resp = await api.post("/v1/jobs", json=_at(2, {"type": "json_object"}, model="tf-chain"))
    assert resp.status_code == 422 and resp.json()["error"]["model"] == "tf-chain"


async def test_the_model_list_says_which_models_support_response_format(api):
    data = (await api.get("/v1/models")).json()["data"]
    supports = {m["id"]: (m["supports_response_format"], m["response_formats"]) for m in data}
    every, json_only = ["choice", "json_object", "json_schema", "regex"], ["json_object", "json_schema"]
    assert supports == {
        "dum": (False, []),
        "tf": (True, every),
        "tf-chain": (False, []),
        "oa": (True, json_only),  # OpenAI's API has no regex or choice
        "tf-oa": (True, json_only),  # its chain reaches oa
    }


@pytest.mark.parametrize("model", ["oa", "tf-oa"])
async def test_a_regex_for_a_model_that_takes_only_json_is_a_422_naming_the_kind(api, r, model):
    size = await r.dbsize()
    fmt = {"type": "regex", "pattern": "[a-z]+"}
    resp = await api.post("/v1/jobs", json=_at(2, fmt, model=model))
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["field"] == "requests[2].response_format" and err["index"] == 2 and err["model"] == model
    assert "'regex' response_format" in err["message"] and "(openai)" in err["message"]
    assert await r.dbsize() == size
    ok = await api.post("/v1/jobs", json=_at(2, {"type": "json_object"}, model=model))
    assert ok.status_code == 202, ok.text


def _line(i: int, **body) -> dict:
    return {
        "custom_id": f"c{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "tf", "messages": [{"role": "user", "content": "hi"}], **body},
    }


async def _batch_for(api, lines: list[dict | bytes]) -> dict:
    content = b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)
    upload = await api.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    assert upload.status_code == 200, upload.text
    resp = await api.post(
        "/v1/batches",
        json={"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_a_batch_line_with_a_bad_schema_fails_the_batch_naming_the_line(api, r, keys):
    bad = _schema_format({"type": "array", "uniqueItems": True})
    batch = await _batch_for(api, [_line(0), _line(1), _line(2, response_format=bad), _line(3)])
    assert batch["status"] == "failed"
    [error] = batch["errors"]["data"]
    assert error["line"] == 3
    assert error["message"].startswith("line 3.response_format.json_schema.schema.uniqueItems"), error["message"]
    assert "'uniqueItems' cannot be enforced" in error["message"]
    assert await r.xlen(keys.ingest_stream) == 0 and not [
        s async for s in r.scan_iter(match=keys.model_stream("*", "*"))
    ]


async def test_a_batch_line_nested_deeper_than_the_decoder_reads_fails_the_batch_naming_the_line(api, r, keys):
    deep = json.dumps(_line(1)).encode()[:-1] + b', "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    batch = await _batch_for(api, [_line(0), deep, _line(2)])
    assert batch["status"] == "failed"
    [error] = batch["errors"]["data"]
    assert error["line"] == 2 and error["code"] == "invalid_json_line" and "nests too deeply" in error["message"]
    assert await r.xlen(keys.ingest_stream) == 0


async def test_a_batch_with_good_schemas_passes_them_through(api, r, keys):
    batch = await _batch_for(api, [_line(0, response_format=_schema_format(SCHEMA)), _line(1)])
    assert batch["status"] == "in_progress", batch
    reqs = await accepted(r, keys)
    assert reqs[0].contract is not None and reqs[1].contract is None
