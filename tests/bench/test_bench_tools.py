"""The benchmark's Redis measurements run to the end on a real Redis and leave it as they found
it (their figures are judged in `make bench`, not here)."""

from __future__ import annotations

import msgspec

from bench import latency_floor, lua_bytes, redis_floor
from bench.redis_cost import ScriptTimes
from shared.jobs.store import JobStore
from shared.wire.messages import InferenceRequest, IngestChunk, SamplingParams


async def test_the_floor_measures_each_layout_and_cleans_up(r, redis_server):
    await r.flushall()
    floor = await redis_floor.measure(redis_server.url, requests=5_000)
    assert set(floor) == set(redis_floor.LAYOUTS)
    assert all(us > 0 for us in floor.values())
    assert await r.dbsize() == 0
    assert list((await r.config_get("auto-aof-rewrite-percentage")).values()) == ["100"]


async def test_the_wake_up_is_timed_in_another_process_for_each_entry_and_cleaned_up(r, redis_server):
    await r.flushall()
    wake = await latency_floor.wake_latency(redis_server.url, samples=20, interval_s=0.005)
    assert 0 < wake["min"] <= wake["p50"] <= wake["p90"] < 1_000_000  # µs: under a second
    assert await r.dbsize() == 0


async def test_the_lua_byte_cost_compares_a_plain_command_with_a_script_and_cleans_up(r, redis_server):
    await r.flushall()
    cost = await lua_bytes.measure(redis_server.url, payloads=50, calls=20)
    assert set(cost) == {"set_ns_per_byte", "script_argument_ns_per_byte", "script_argument_unpacked_ns_per_byte"}
    assert await r.dbsize() == 0


async def test_script_times_names_each_script_called_and_restores_the_slow_log(r, keys):
    before = await r.config_get("slowlog-*")
    enc = msgspec.msgpack.Encoder()
    store = JobStore(r, keys)
    times = None
    for n in range(4):  # the first loads the script (a first EVALSHA answered NOSCRIPT is logged too)
        if n == 1:
            times = await ScriptTimes.start(r)
        req = InferenceRequest(
            request_id=f"req_{n}",
            job_id=f"job_{n}",
            custom_id="c",
            model="alpha",
            accepted_ms=0,
            prompt="p",
            params=SamplingParams(max_tokens=4),
        )
        chunk = enc.encode(IngestChunk(req.job_id, [("alpha", "batch", enc.encode(req))]))
        await store.create(req.job_id, 1_000, {"alpha": 1}, {}, [chunk])
    assert times is not None
    spent = await times.stop(requests=3)
    assert list(spent) == ["create_job"]
    assert spent["create_job"]["calls_per_request"] == 1.0
    assert spent["create_job"]["usec_per_request"] > 0
    assert await r.config_get("slowlog-*") == before
    assert await r.slowlog_len() == 0
