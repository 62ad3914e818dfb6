"""The HTTP sink's delivery rules, against a real Redis and a real CloudEvents receiver on
loopback: what a receiver refuses as malformed is skipped and counted, a receiver that takes no
batches gets single events, Retry-After is honoured, two dispatchers never both deliver, the SSRF
guard applies, and credentials come from the environment."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from services.dispatcher.sinks.fleet import sink_runners
from services.dispatcher.sinks.runner import SinkRunner
from services.ingest.sink_status import read_sinks
from shared.catalog.models import parse_models
from shared.core.errors import ConfigError
from shared.core.settings import Settings
from shared.ops import metrics
from shared.wire.events import rfc3339_ms
from tests.support.cloudevents_receiver import CloudEventsReceiver

MODELS = '[models.m]\nengine = "dummy"\n'


@pytest.fixture
def receiver():
    with CloudEventsReceiver() as rec:
        yield rec


async def add_events(r, keys, n: int, job: str = "job_a") -> list[str]:
    """`n` request.completed events of one job on the events stream, as the collector writes them."""
    ids = []
    for i in range(n):
        event_id = f"req_{job}_{i}.{time.time_ns()}"
        doc = msgspec.json.encode(
            {
                "specversion": "1.0",
                "id": event_id,
                "source": "/inferq",
                "type": "com.inferq.request.completed",
                "subject": job,
                "time": rfc3339_ms(int(time.time() * 1000)),
                "datacontenttype": "application/json",
                "data": {"custom_id": f"c{i}"},
            }
        )
        await r.xadd(keys.events_stream, {"type": "request.completed", "job": job, "event": doc})
        ids.append(event_id)
    return ids


def config(text: str):
    return parse_models(MODELS + text)


async def running(r, keys, models, settings, stop) -> list[SinkRunner]:
    runners = sink_runners(r, keys, models, settings)
    for runner in runners:
        asyncio.get_running_loop().create_task(runner.run(stop))
    return runners


async def until(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def stop():
    return asyncio.Event()


@pytest.fixture
async def stopped(stop):
    yield
    stop.set()
    await asyncio.sleep(0.3)


def sink_table(name: str, receiver, path: str, mode: str = "structured", **extra) -> str:
    lines = [f"[sinks.{name}]", 'kind = "http"', f'url = "{receiver.url(path)}"', f'mode = "{mode}"']
    lines += ["allow_http = true", "allow_private = true", "retry_initial_s = 0.1", "retry_max_s = 0.2"]
    return "\n".join(lines + [f"{k} = {v}" for k, v in extra.items()]) + "\n"


async def status(r, keys, models) -> dict:
    return {s.name: s for s in await read_sinks(r, keys, models.sinks)}


async def test_an_event_the_receiver_refuses_as_malformed_is_skipped_and_counted(
    r, keys, settings, stop, stopped, receiver
):
    models = config(sink_table("s", receiver, "/s"))
    ids = await add_events(r, keys, 5)
    receiver.refuse_ids["/s"] = {ids[2]}
    runners = await running(r, keys, models, settings, stop)
    done = await until(lambda: _caught_up(r, keys, models, "s"))
    assert (done.delivered, done.rejected, done.lost) == (4, 1, 0)
    assert [e.id for e in receiver.at("/s")] == ids[:2] + ids[3:]
    exposed = metrics_text({"sinks": runners})
    assert 'inferq_sink_events_delivered_total{sink="s"} 4.0' in exposed
    assert 'inferq_sink_events_rejected_total{sink="s"} 1.0' in exposed
    assert 'inferq_sink_failing{sink="s"} 0.0' in exposed


async def test_a_refused_batch_is_sent_again_event_by_event_and_a_receiver_without_batches_gets_single_events(
    r, keys, settings, stop, stopped, receiver
):
    models = config(
        sink_table("picky", receiver, "/picky", "batch") + sink_table("nobatch", receiver, "/s-nobatch", "batch")
    )
    ids = await add_events(r, keys, 6)
    receiver.refuse_ids["/picky"] = {ids[4]}
    await running(r, keys, models, settings, stop)
    picky = await until(lambda: _caught_up(r, keys, models, "picky"))
    nobatch = await until(lambda: _caught_up(r, keys, models, "nobatch"))
    assert (picky.delivered, picky.rejected) == (5, 1)
    assert [e.id for e in receiver.at("/picky")] == ids[:4] + ids[5:]
    assert (nobatch.delivered, nobatch.rejected) == (6, 0)
    assert [e.id for e in receiver.at("/s-nobatch")] == ids
    assert receiver.content_types["/s-nobatch"] == {"application/cloudevents+json"}
    more = await add_events(r, keys, 3)
    await until(lambda: _delivered(receiver, "/s-nobatch", 9))
    assert [e.id for e in receiver.at("/s-nobatch")][6:] == more  # it stays with single events


async def test_retry_after_is_honoured(r, keys, settings, stop, stopped, receiver):
    models = config(sink_table("s", receiver, "/s"))
    receiver.answer("/s", 503, for_s=1.0, headers={"Retry-After": "2"})
    began = time.monotonic()
    await add_events(r, keys, 1)
    await running(r, keys, models, settings, stop)
    await until(lambda: _delivered(receiver, "/s", 1))
    assert receiver.refused["/s"] == 1, "one refusal, then nothing until Retry-After passed"
    assert time.monotonic() - began >= 2.0


async def test_a_retry_after_nobody_can_read_is_no_retry_after(r, keys, settings, stop, stopped, receiver):
    models = config(sink_table("s", receiver, "/s"))
    receiver.answer("/s", 503, for_s=0.5, headers={"Retry-After": "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"})
    await add_events(r, keys, 1)
    await running(r, keys, models, settings, stop)
    await until(lambda: _delivered(receiver, "/s", 1))
    assert receiver.refused["/s"] >= 2  # retried on its own backoff


async def test_a_dispatcher_that_lost_the_lease_cannot_move_the_cursor(r, keys):
    from services.dispatcher.sinks.cursor import SinkCursor

    await add_events(r, keys, 3)
    await r.set(keys.sink_lease("s"), "first", px=5000)
    first = SinkCursor(r, keys, "s", "first", start="earliest")
    batch = await first.read(10)
    assert batch is not None and len(batch.entries) == 3
    await r.set(keys.sink_lease("s"), "second", px=5000)  # the lease ran out and another took it
    assert await first.read(10) is None
    assert not await first.advance(batch, delivered=3, rejected=0)
    second = SinkCursor(r, keys, "s", "second", start="earliest")
    again = await second.read(10)
    assert again is not None and again.entries == batch.entries, "the batch is read again by the new holder"
    assert await second.advance(again, delivered=3, rejected=0)
    assert not await second.advance(again, delivered=3, rejected=0), "a batch moves the cursor once"
    assert (await r.hget(keys.sink("s"), "delivered")) == b"3"


async def test_a_stream_that_starts_again_sends_the_cursor_back(r, keys, settings, stop, stopped, receiver, caplog):
    models = config(sink_table("s", receiver, "/s"))
    first = await add_events(r, keys, 5)
    await running(r, keys, models, settings, stop)
    await until(lambda: _caught_up(r, keys, models, "s"))
    await r.delete(keys.events_stream)  # deleted by hand
    later = await add_events(r, keys, 2)
    await until(lambda: _delivered(receiver, "/s", 7))
    assert [e.id for e in receiver.at("/s")] == first + later
    s = await until(lambda: _caught_up(r, keys, models, "s"))
    assert (s.lag, s.lost, s.delivered) == (0, 0, 7)
    assert "the events stream was deleted or restored" in caplog.text


async def test_two_dispatchers_never_both_deliver_to_a_sink(r, keys, settings, stop, stopped, receiver):
    models = config(sink_table("s", receiver, "/s"))
    ids = await add_events(r, keys, 300)
    await running(r, keys, models, settings, stop)
    await running(r, keys, models, settings, stop)  # a second dispatcher
    await until(lambda: _caught_up(r, keys, models, "s"))
    assert [e.id for e in receiver.at("/s")] == ids


async def test_the_ssrf_guard_applies_unless_the_sink_allows_private_addresses(r, keys, stop, stopped, receiver):
    strict = Settings(redis_url="redis://x", auth="off")  # webhooks' defaults: https only, public addresses
    models = config(f'[sinks.s]\nkind = "http"\nurl = "{receiver.url("/s")}"\nallow_http = true\n')
    await add_events(r, keys, 2)
    await running(r, keys, models, strict, stop)
    failing = await until(lambda: _failing(r, keys, models, "s"))
    assert "url refused" in failing.last_error and failing.delivered == 0 and failing.lag == 2
    assert receiver.at("/s") == []


async def test_credentials_come_from_the_environment(r, keys, settings, stop, stopped, receiver, monkeypatch):
    models = config(sink_table("s", receiver, "/s", headers_env='{ Authorization = "SINK_TEST_AUTH" }'))
    with pytest.raises(ConfigError, match="SINK_TEST_AUTH, which is not set"):
        sink_runners(r, keys, models, settings)
    monkeypatch.setenv("SINK_TEST_AUTH", "Bearer sekret")
    await add_events(r, keys, 1)
    await running(r, keys, models, settings, stop)
    await until(lambda: _delivered(receiver, "/s", 1))
    assert receiver.headers_seen["/s"]["authorization"] == "Bearer sekret"
    shown = (await status(r, keys, models))["s"]
    assert "sekret" not in msgspec.json.encode(shown).decode()


def metrics_text(source: dict) -> str:
    """What the dispatcher's /metrics shows for these sinks."""
    from prometheus_client import CollectorRegistry, generate_latest

    counters = metrics.DispatcherCounters.__new__(metrics.DispatcherCounters)
    counters.source = source
    registry = CollectorRegistry()
    registry.register(counters)
    return generate_latest(registry).decode()


async def _caught_up(r, keys, models, name):
    s = (await status(r, keys, models))[name]
    return s if s.cursor and s.lag == 0 else None


async def _failing(r, keys, models, name):
    s = (await status(r, keys, models))[name]
    return s if s.last_error else None


async def _delivered(receiver, path, n):
    return len(receiver.at(path)) >= n
