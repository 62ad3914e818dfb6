"""The OpenAPI document is exact: schemathesis, run from its own engine with every check (what
`st run --checks all` runs) and all four phases (examples, coverage, fuzzing, stateful over the
document's links), against a real stack (ingest, dispatcher, worker, redis-server), finds nothing:
no 5xx, no undocumented status, header or body, no schema-valid request refused, no invalid one
accepted, every 405 with `Allow`, nothing left behind by a delete. Without a valid key every /v1
operation answers 401, as documented."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit, urlunsplit

import msgspec
import pytest
import schemathesis
from schemathesis.engine import Status, events, from_schema

from inferq.localstack import LocalStack
from services.ingest import contract_check
from shared.wire.api import WEBHOOK_URL_PATTERN
from shared.wire.contract import contract_of
from shared.wire.formats import ResponseFormat

KEY = "fuzz-key-0123456789abcdef"
# alpha cannot hold an output to a response_format, hosted can (it passes the format on: to a port
# where nothing listens, which the API never sees): the document states which takes what
MODELS = """
[models.alpha]
engine = "dummy"
max_inflight = 64
[models.hosted]
engine = "openai"
[models.hosted.options]
base_url = "http://127.0.0.1:9/v1"
max_retries = 0
"""
EXAMPLES = 60  # per operation, in the fuzzing phase
STATEFUL_SCENARIOS = 150  # scenarios (chains of linked calls) in the stateful phase
PHASES = ["examples", "coverage", "fuzzing", "stateful"]
_URL = re.compile(WEBHOOK_URL_PATTERN)
URL_MAX = 2048  # WebhookUrl's max_length


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "models.toml"
    path.write_text(MODELS)
    env = {
        "INFERQ_AUTH": "on",
        "INFERQ_API_KEYS": f"fuzz:{KEY}",
        # the body byte limit (INFERQ_MAX_BODY_BYTES) stays at its default, far above any generated
        # body: a size in bytes is no JSON Schema keyword, so no document can keep a client under it
        # a host must resolve to be accepted, which no document can state; generated hosts are
        # replaced by `localhost` (see `_resolvable`), which this lets through
        "INFERQ_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    with LocalStack(path, workdir=path.parent / "stack", env=env) as running:
        yield running


def _resolvable(url: object) -> object:
    """A document-valid webhook URL with its host replaced by one that resolves here."""
    if not isinstance(url, str) or not _URL.match(url) or len(url) > URL_MAX:
        return url  # a negative case stays negative
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"localhost{port}"))[:URL_MAX]  # cut in the path: still valid


def _run(stack: LocalStack, key: str, examples: int, phases: list[str]):
    config = schemathesis.Config()
    project = config.projects.override
    # one worker: Python 3.11 can fail compiling in two threads at once (SystemError from the AST)
    project.update(headers={"Authorization": f"Bearer {key}"}, workers=1, request_timeout=5)
    project.checks.update(included_check_names=["all"])
    project.phases.update(phases=phases)
    project.phases.stateful.generation.update(max_examples=STATEFUL_SCENARIOS)
    project.generation.update(max_examples=examples, database="none")
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/openapi.json", config=config)

    @schema.hook
    def map_body(ctx, body):
        if isinstance(body, dict):
            if isinstance(body.get("url"), str):
                body["url"] = _resolvable(body["url"])
            hook = body.get("webhook")
            if isinstance(hook, dict) and isinstance(hook.get("url"), str):
                hook["url"] = _resolvable(hook["url"])
        return body

    @schema.hook
    def filter_body(ctx, body):
        return not _repeats_an_id(body) and not _holds_an_unservable_contract(body) and not _misses_its_window(body)

    failures: list[str] = []
    responses: list[tuple[str, str, str, int]] = []
    ran: set[str] = set()
    started: dict[str, float] = {}
    for event in from_schema(schema).execute():
        if isinstance(event, events.PhaseStarted):
            started[event.phase.name.value] = time.monotonic()
        if isinstance(event, events.PhaseFinished):
            name = event.phase.name.value
            print(f"{name}: {time.monotonic() - started.get(name, time.monotonic()):.1f}s")  # in -s output
        if isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"error: {getattr(event, 'label', '')} {getattr(event, 'info', event)}")
        if isinstance(event, events.PhaseFinished) and event.status in (Status.FAILURE, Status.ERROR):
            ran.add(event.phase.name.value)
        if not isinstance(event, events.ScenarioFinished):
            continue
        ran.add(event.phase.value)
        for case_id, checks in event.recorder.checks.items():
            for check in checks:
                if check.status == Status.FAILURE and not _unobservable(event.recorder, case_id, check.name):
                    failures.append(_describe(event.recorder, case_id, check))
        for interaction in event.recorder.interactions.values():
            if interaction.response is not None:
                req = interaction.request
                path = urlsplit(req.uri).path
                responses.append((event.recorder.label, req.method, path, interaction.response.status_code))
    return sorted(set(failures)), responses, ran


def _repeats_an_id(body: object) -> bool:
    """A job whose requests repeat a `custom_id` (`id` in the short form): refused, as its schema's
    description says, but "unique by one property" is a rule JSON Schema cannot state."""
    if not isinstance(body, dict):
        return False
    for field, key in (("requests", "custom_id"), ("prompts", "id")):
        items = body.get(field)
        if isinstance(items, list):
            ids = [i.get(key) for i in items if isinstance(i, dict) and i.get(key) is not None]
            if len(ids) != len(set(map(str, ids))):
                return True
    return False


def _misses_its_window(body: object) -> bool:
    """A job whose `deadline` has passed or comes after its completion window ends, or whose
    on_deadline_risk needs a deadline it lacks: refused, as the document describes, by rules of
    time and of two fields together that JSON Schema does not state."""
    if not isinstance(body, dict):
        return False
    deadline = body.get("deadline")
    if deadline is None:
        return body.get("on_deadline_risk", "best_effort") != "best_effort"
    try:
        at = deadline if isinstance(deadline, int | float) else dt.datetime.fromisoformat(str(deadline)).timestamp()
        window = str(body.get("completion_window", "24h"))
        seconds = int(window[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[window[-1]]
    except (ValueError, KeyError, OverflowError):
        return False  # not a valid body: a negative case stays negative
    now = time.time()
    return not now + 5 < at <= now + seconds


def _holds_an_unservable_contract(body: object) -> bool:
    """A job with a response_format the server refuses for a rule its document can only describe
    (services/ingest/openapi/contracts.py): a regex outside the dialect a grammar compiles, a schema
    whose references dangle or whose bounds leave no value, a size in bytes."""
    if not isinstance(body, dict):
        return False
    formats = [body.get("response_format")]
    for field in ("requests", "prompts"):
        items = body.get(field)
        if isinstance(items, list):
            formats += [item.get("response_format") for item in items if isinstance(item, dict)]
    for fmt in formats:
        try:
            contract = contract_of(msgspec.convert(fmt, ResponseFormat | None))
        except (msgspec.ValidationError, TypeError):
            continue  # not a format: the document says so, and a negative case stays negative
        if contract is None:
            continue
        try:
            contract_check.check(contract)
        except contract_check.ContractRefused:
            return True
        except RecursionError:
            continue
    return False


def _json(raw: bytes | None) -> object:
    try:
        return msgspec.json.decode(raw or b"")
    except msgspec.DecodeError:
        return None


def _unobservable(recorder, case_id: str, check: str) -> bool:
    """The negative cases no server can refuse, since what is sent is valid on the wire:
    - an upload whose `file` schemathesis "negated" to another JSON type (a number, an object)
      still arrives as a file part of bytes, and any bytes are a file (the form itself is closed:
      a field it does not name is refused, tests/services/ingest/test_openapi_document.py);
    - a `metadata[key]` filter "negated" to null arrives as the text `null`, a valid value.
    And the positive cases the coverage phase sends without the filter hook that refuse them: a
    response_format the server refuses for a rule the document only describes."""
    interaction = recorder.interactions.get(case_id)
    if interaction is not None and check == "positive_data_acceptance":
        # the coverage phase does not pass its bodies through the filter hook
        body = _json(interaction.request.body)
        return _holds_an_unservable_contract(body) or _misses_its_window(body)
    if interaction is None or check != "negative_data_rejection":
        return False
    request = interaction.request
    url = urlsplit(request.uri)
    if request.method == "POST" and url.path == "/v1/files" and b"filename=" in (request.body or b""):
        return True
    return any(k.startswith("metadata[") and v == ["null"] for k, v in parse_qs(url.query).items())


def _describe(recorder, case_id: str, check) -> str:
    """A failure with what was sent and what came back, enough to reproduce it."""
    info = check.failure_info
    text = f"{recorder.label}: {check.name}: {info.failure.title if info else ''}"
    if info is not None:
        text += f"\n  {info.code_sample}"
    interaction = recorder.interactions.get(case_id)
    if interaction is not None and interaction.response is not None:
        body = (interaction.response.content or b"")[:300].decode(errors="replace")
        text += f"\n  -> {interaction.response.status_code} {body}"
    return text


@pytest.mark.timeout(600)
def test_with_a_key_schemathesis_finds_nothing(stack):
    failures, responses, ran = _run(stack, KEY, EXAMPLES, PHASES)
    assert not failures, "\n".join(failures)
    assert {"coverage", "fuzzing", "stateful"} <= ran, ran
    # the links led to real resources: each was created, then read by its id
    read = {path for _, method, path, status in responses if method == "GET" and status == 200}
    # (a batch is two links away, upload then create, which a run reaches only sometimes)
    for resource in ("jobs", "files", "webhooks"):
        tried = Counter(
            f"{m} {re.sub(r'/(job|file|batch|wh)[-_][^/]+', '/{id}', p)} {c}"
            for _, m, p, c in responses
            if p.startswith(f"/v1/{resource}")
        )
        assert any(re.fullmatch(f"/v1/{resource}/[^/]+", path) for path in read), (resource, dict(tried))


@pytest.mark.timeout(600)
def test_without_a_valid_key_every_v1_operation_is_401(stack):
    failures, responses, ran = _run(stack, "not-a-key-0123456789", 10, ["coverage", "fuzzing"])
    assert not failures, "\n".join(failures)
    # requests for the operation itself (not an undeclared method, which is a 405 with Allow)
    own = [
        status
        for label, method, path, status in responses
        if label.startswith(f"{method} /v1/") and "//" not in path and not path.endswith("/")
    ]
    assert own and set(own) == {401}, Counter(own)
