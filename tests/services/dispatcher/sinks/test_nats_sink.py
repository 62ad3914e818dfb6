"""The NATS sink against a real nats-server: an event the server will never take (larger than its
max_payload) is skipped and counted, the job's other events still go, in order; credentials
files need the server to accept them."""

from __future__ import annotations

import asyncio

import pytest

from services.dispatcher.sinks.fleet import sink_runners
from shared.catalog.models import parse_models
from shared.core.errors import ConfigError
from tests.services.dispatcher.sinks.test_http_sink import MODELS, add_events, until
from tests.support.nats_server import NatsServer, stored


@pytest.fixture
def small_server(tmp_path):
    with NatsServer(tmp_path / "nats", config="max_payload: 1024\n") as server:
        yield server


async def test_an_event_larger_than_the_servers_max_payload_is_skipped_and_counted(r, keys, settings, small_server):
    models = parse_models(MODELS + f'[sinks.bus]\nkind = "nats"\nservers = ["{small_server.url}"]\nstream = "INFERQ"\n')
    ids = await add_events(r, keys, 2)
    await r.xadd(
        keys.events_stream,
        {"type": "request.completed", "job": "job_a", "event": _big_event("req_job_a_big", "job_a")},
    )
    ids += await add_events(r, keys, 2)
    stop = asyncio.Event()
    [runner] = sink_runners(r, keys, models, settings)
    task = asyncio.create_task(runner.run(stop))
    try:
        await until(lambda: _passed(r, keys, 5))
        state = await r.hgetall(keys.sink("bus"))
        assert (state[b"delivered"], state[b"rejected"]) == (b"4", b"1")
        on_bus = await asyncio.to_thread(stored, small_server.url, "INFERQ")
        assert [m.msg_id for m in on_bus] == ids
    finally:
        stop.set()
        await task


def test_a_credentials_file_that_is_not_there_stops_the_start(r, keys, settings):
    models = parse_models(
        MODELS + '[sinks.bus]\nkind = "nats"\nservers = ["nats://n:4222"]\ncreds_file = "/nope.creds"\n'
    )
    with pytest.raises(ConfigError, match="creds_file /nope.creds is not a file"):
        sink_runners(r, keys, models, settings)


def _big_event(event_id: str, job: str) -> bytes:
    import msgspec

    return msgspec.json.encode(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "/inferq",
            "type": "com.inferq.request.completed",
            "subject": job,
            "datacontenttype": "application/json",
            "data": {"output": "x" * 4000},
        }
    )


async def _passed(r, keys, n: int) -> bool:
    seen = await r.hget(keys.sink("bus"), "seen")
    return seen is not None and int(seen) >= n
