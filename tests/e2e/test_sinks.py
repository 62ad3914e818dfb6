"""Event sinks end to end on real processes: a CloudEvents HTTP receiver that parses with the
CloudEvents SDK (binary, structured and batched mode) and a real `nats-server -js`, fed by the
dispatcher from the events stream. Every event arrives, exactly once after dedupe by its `id`,
in stream order per job; faults (kill -9 of the dispatcher, a receiver answering 503 for 30 s,
nats-server stopped and started) lose nothing and hold back neither the other sinks nor webhooks."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from inferq.localstack import LocalStack
from shared.redis.keys import Keys
from tests.support.cloudevents_receiver import CloudEventsReceiver
from tests.support.nats_server import NatsServer, stored

keys = Keys("inferq")
MODEL = """
[models.echo]
engine = "dummy"
max_inflight = 64
[models.echo.options]
latency_ms = {latency}
"""


def http_sink(name: str, receiver: CloudEventsReceiver, mode: str, **extra) -> str:
    lines = [f"[sinks.{name}]", 'kind = "http"', f'url = "{receiver.url("/" + name)}"', f'mode = "{mode}"']
    lines += ["allow_http = true", "allow_private = true"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def nats_sink(name: str, server: NatsServer, **extra) -> str:
    lines = [f"[sinks.{name}]", 'kind = "nats"', f'servers = ["{server.url}"]', 'stream = "INFERQ"']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def submit(api: httpx.Client, n: int, **extra) -> str:
    resp = api.post("/v1/jobs", json={"requests": [{"model": "echo", "prompt": f"p{i}"} for i in range(n)], **extra})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def wait_for(predicate, timeout: float, what: str, stack: LocalStack | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if stack is not None:
            stack.check_alive()
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def sinks(api: httpx.Client) -> dict[str, dict]:
    resp = api.get("/v1/sinks")
    assert resp.status_code == 200, resp.text
    return {s["name"]: s for s in resp.json()["data"]}


def stream_events(rdb: redis.Redis) -> list[tuple[str, str]]:
    """(CloudEvent id, job id) of every event on the events stream, in stream order."""
    import json

    return [
        (json.loads(f[b"event"])["id"], f[b"job"].decode()) for _, f in rdb.xrange(keys.events_stream, count=1_000_000)
    ]


def in_order_per_job(expected: list[tuple[str, str]], got: list[tuple[str, str]]) -> None:
    """Each job's events arrive in the order the stream holds them."""
    by_job: dict[str, list[str]] = {}
    for event_id, job in expected:
        by_job.setdefault(job, []).append(event_id)
    seen: dict[str, list[str]] = {}
    for event_id, job in got:
        seen.setdefault(job, []).append(event_id)
    for job, ids in by_job.items():
        assert seen.get(job, []) == ids, f"job {job}: events out of stream order"


@pytest.fixture(scope="module")
def receiver():
    with CloudEventsReceiver() as rec:
        yield rec


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory):
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server


def test_every_event_reaches_every_sink_once_in_order(tmp_path, receiver, nats_server):
    models = tmp_path / "models.toml"
    models.write_text(
        MODEL.format(latency=1)
        + http_sink("structured", receiver, "structured")
        + http_sink("binary", receiver, "binary")
        + http_sink("batch", receiver, "batch", batch_size=250)
        + http_sink("red", receiver, "structured", metadata='{ team = "red" }', types='["job.completed"]')
        + nats_sink("bus", nats_server)
    )
    with (
        LocalStack(models, workdir=tmp_path / "stack") as stack,
        httpx.Client(base_url=stack.base_url, timeout=30) as api,
    ):
        rdb = redis.Redis.from_url(stack.redis_url)
        big = submit(api, 5000)
        red = submit(api, 3, metadata={"team": "red"})
        for job in (big, red):
            wait_for(lambda j=job: api.get(f"/v1/jobs/{j}").json()["status"] == "completed", 180, f"job {job}", stack)
        expected = stream_events(rdb)
        assert len(expected) == 5000 + 1 + 3 + 1
        wait_for(lambda: all(s["lag"] == 0 and s["cursor"] for s in sinks(api).values()), 120, "sinks caught up", stack)

        for name in ("structured", "binary", "batch"):
            got = [(e.id, e.subject) for e in receiver.at(f"/{name}")]
            assert len(got) == len(expected) and set(got) == set(expected), f"{name}: not exactly once"
            in_order_per_job(expected, got)
            assert {e.mode for e in receiver.at(f"/{name}")} == {name}
            assert all(e.data for e in receiver.at(f"/{name}")), "each event carries its data"
        assert max(receiver.sizes["/batch"]) > 1 and max(receiver.sizes["/batch"]) <= 250, (
            "batches of batch_size at most"
        )
        assert set(receiver.sizes["/structured"]) == set(receiver.sizes["/binary"]) == {1}
        # the metadata filter: only the red job's end
        red_end = [i for i, job in expected if job == red and i.startswith(job)]
        assert [(e.id, e.type) for e in receiver.at("/red")] == [(red_end[0], "com.inferq.job.completed")]

        on_bus = stored(nats_server.url, "INFERQ")
        assert [(m.msg_id, m.subject) for m in on_bus] == [
            (m.msg_id, "inferq." + ("job.completed" if ".completed." in m.msg_id else "request.completed"))
            for m in on_bus
        ]
        import json

        got_bus = [(m.msg_id, json.loads(m.body)["subject"]) for m in on_bus]
        assert all(json.loads(m.body)["id"] == m.msg_id for m in on_bus), "Nats-Msg-Id is the CloudEvent id"
        assert {m.content_type for m in on_bus} == {"application/cloudevents+json"}
        assert len(got_bus) == len(expected) and set(got_bus) == set(expected)
        in_order_per_job(expected, got_bus)

        status = sinks(api)
        assert sorted(status) == ["batch", "binary", "bus", "red", "structured"]
        for name, s in status.items():
            assert (s["lost"], s["rejected"], s["last_error"], s["delivering"]) == (0, 0, None, True), name
            assert s["delivered"] == (1 if name == "red" else len(expected)), name
        assert status["bus"]["target"] == nats_server.url and status["bus"]["subject"] == "inferq.{type}"
