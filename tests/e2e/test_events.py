"""The events stream and live job events: every event parses with the CloudEvents SDK, the
example consumer reads them with its own group, and SSE delivers every request event of a job and
then job.completed, resuming after Last-Event-ID without loss."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
import redis
from cloudevents.core.formats.json import JSONFormat

from inferq.localstack import LocalStack
from shared.redis.keys import Keys
from shared.wire.events import schema
from tests.conftest import ROOT

MODELS = """
[models.slow]
engine = "dummy"
max_inflight = 2
[models.slow.options]
latency_ms = 8
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("events") / "models.toml"
    path.write_text(MODELS)
    with LocalStack(path, workdir=path.parent / "stack") as running:
        yield running


def submit(base_url: str, n: int) -> str:
    resp = httpx.post(
        f"{base_url}/v1/jobs",
        json={"requests": [{"model": "slow", "prompt": f"event {i}", "custom_id": f"c{i}"} for i in range(n)]},
    )
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def sse_events(client: httpx.Client, url: str, headers: dict | None = None, stop_after: int | None = None):
    """(id, event, data) of each SSE message, until the server closes or `stop_after` were read."""
    out = []
    with client.stream("GET", url, headers=headers or {}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        msg: dict[str, str] = {}
        for line in resp.iter_lines():
            if line == "":
                if "data" in msg:
                    out.append((msg.get("id"), msg.get("event"), json.loads(msg["data"])))
                    if stop_after and len(out) >= stop_after:
                        return out
                msg = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(": ")
                msg[field] = value
    return out


def test_sse_delivers_every_request_then_the_job_and_resumes_without_loss(stack):
    n = 60
    job_id = submit(stack.base_url, n)
    url = f"{stack.base_url}/v1/jobs/{job_id}/events"
    with httpx.Client(timeout=30) as client:
        first = sse_events(client, url, stop_after=10)  # then the connection drops
        assert httpx.get(f"{stack.base_url}/v1/jobs/{job_id}").json()["status"] != "completed"  # it was live
        rest = sse_events(client, url, headers={"Last-Event-ID": first[-1][0]})
        again = sse_events(client, url, headers={"Last-Event-ID": rest[-1][0]})
    events = first + rest
    requests = [e for e in events if e[1] == "request.completed"]
    assert sorted(d["data"]["custom_id"] for _, _, d in requests) == sorted(f"c{i}" for i in range(n))  # each once
    assert events[-1][0] == "end" and events[-1][1] == "job.completed"
    final = events[-1][2]
    assert final["type"] == "com.inferq.job.completed" and final["data"]["request_counts"]["succeeded"] == n
    assert again == []  # resuming after `end` gives nothing more
    fmt = JSONFormat()
    for _, _, doc in events:
        event = fmt.read(None, json.dumps(doc))
        assert event.get_subject() == job_id and event.get_specversion() == "1.0"


def test_sse_errors(stack):
    resp = httpx.get(f"{stack.base_url}/v1/jobs/job_00000000000000000000000000/events")
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "job_id"
    job_id = submit(stack.base_url, 1)
    for bad in ("banana", "99999999999999999999-0"):
        resp = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}/events", headers={"Last-Event-ID": bad})
        assert resp.status_code == 422 and resp.json()["error"]["field"] == "Last-Event-ID"


def test_events_stream_is_cloudevents_and_the_example_consumer_reads_it(stack):
    job_id = submit(stack.base_url, 12)
    deadline = time.monotonic() + 20
    while httpx.get(f"{stack.base_url}/v1/jobs/{job_id}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = redis.Redis.from_url(stack.redis_url)
    entries = r.xrange(Keys().events_stream)
    fmt = JSONFormat()
    parsed = [fmt.read(None, fields[b"event"]) for _, fields in entries]
    assert all(
        e.get_specversion() == "1.0" and e.get_source() == "/inferq" and e.get_time() is not None for e in parsed
    )
    assert all(
        fields[b"type"].decode() == e.get_type().removeprefix("com.inferq.") for (_, fields), e in zip(entries, parsed)
    )
    mine = [e for e in parsed if e.get_subject() == job_id]
    assert [e.get_type() for e in mine].count("com.inferq.request.completed") == 12
    assert [e.get_type() for e in mine][-1] == "com.inferq.job.completed"
    assert len({e.get_id() for e in parsed}) == len(parsed)

    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/consume_events.py"),
            "--redis-url",
            stack.redis_url,
            "--from-start",
            "--group",
            "test-consumer",
            "--max-events",
            str(len(entries)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [json.loads(l) for l in out.stdout.splitlines()]
    assert len(lines) == len(entries) and {l["id"] for l in lines} == {e.get_id() for e in parsed}
    assert r.xpending(Keys().events_stream, "test-consumer")["pending"] == 0  # all acknowledged


def test_events_schema_document_is_current():
    """docs/events.schema.json is generated from the msgspec types: regenerate it with `python -c
    "import json, shared.wire.events as e; print(json.dumps(e.schema(), indent=2))" > docs/events.schema.json`."""
    assert json.loads((ROOT / "docs/events.schema.json").read_text()) == schema()
