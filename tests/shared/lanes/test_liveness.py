"""Heartbeats, takeover of a dead consumer's entries, and the drop of a stopping job's requests
that no live worker will read: each step against a real redis-server, in one process. The same
behaviour through real processes (kill -9, SIGSTOP) is in tests/e2e/test_takeover.py."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from inferq.localstack import free_port
from services.dispatcher.collector import Collector
from services.dispatcher.router import Router
from services.dispatcher.stranded import finish_stranded_jobs
from services.inference.publisher import Outcome, ResultPublisher
from shared.core.states import RequestStatus
from shared.jobs.store import JobStore
from shared.lanes.liveness import TAKEOVER_MIN_IDLE_MS, Heartbeat, Liveness
from shared.lanes.takeover import DropStranded
from shared.redis.keys import COLLECTOR_GROUP, EVENT_FIELD, ROUTER_GROUP, WORKER_GROUP
from shared.redis.streams import ensure_group
from tests.shared.jobs.test_exactly_once import _create_job, _result

IDLE_S = TAKEOVER_MIN_IDLE_MS / 1000 + 0.2  # long enough for a dead consumer's entries to be taken


async def _read(r, stream: str, consumer: str, count: int) -> list:
    reply = await r.xreadgroup(WORKER_GROUP, consumer, {stream: ">"}, count=count)
    return reply[0][1] if reply else []


async def _stream_with(r, n: int) -> str:
    stream = "inferq:stream:model:alpha:batch"
    await ensure_group(r, stream, WORKER_GROUP)
    for i in range(n):
        await r.xadd(stream, {"d": f"req{i}"})
    return stream


async def test_a_heartbeat_keeps_its_key_alive_while_redis_refuses_writes(r, keys):
    beat = Heartbeat(r, keys.heartbeat("w1"), ttl_s=1.0)
    await beat.beat()
    await r.config_set("maxmemory", "1")  # every write that may grow memory is refused (OOM)
    try:
        with pytest.raises(ResponseError, match="maxmemory"):
            await r.set("inferq:anything", "x")
        for _ in range(4):  # well past the 1 s TTL
            await asyncio.sleep(0.4)
            await beat.beat()
        assert await r.exists(keys.heartbeat("w1"))
    finally:
        await r.config_set("maxmemory", "0")


async def test_a_heartbeat_comes_back_after_its_key_is_gone(r, keys):
    beat = Heartbeat(r, keys.heartbeat("w1"), ttl_s=10.0)
    await beat.beat()
    assert not beat.revived.is_set()
    await r.delete(keys.heartbeat("w1"))  # as after a pause longer than the TTL
    await beat.beat()
    assert 0 < await r.pttl(keys.heartbeat("w1")) <= 10_000
    assert beat.revived.is_set()  # the worker checks at once which of its requests are still its own


async def test_the_heartbeat_task_survives_redis_being_unreachable(keys):
    nowhere = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2)
    task = asyncio.create_task(Heartbeat(nowhere, keys.heartbeat("w1"), ttl_s=1.0).run())
    await asyncio.sleep(1.5)  # several failed beats
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await nowhere.aclose()


async def test_a_heartbeat_key_goes_when_its_consumer_task_ends(r, keys):
    beat = Heartbeat(r, keys.heartbeat("w1"), ttl_s=10.0)

    async def consumer():
        beat.keep_while_current_task()
        await asyncio.sleep(0.2)
        assert await r.exists(keys.heartbeat("w1"))

    await asyncio.create_task(consumer())
    for _ in range(50):
        if not await r.exists(keys.heartbeat("w1")):
            break
        await asyncio.sleep(0.02)
    assert not await r.exists(keys.heartbeat("w1"))


async def test_a_live_consumer_keeps_its_entries_however_long_it_holds_them(r, keys):
    stream = await _stream_with(r, 3)
    live = Liveness(r, keys, ttl_s=0.5)
    beating = asyncio.create_task(live.heartbeat("slow").run())
    await _read(r, stream, "slow", 3)
    await asyncio.sleep(IDLE_S)  # silent longer than the TTL: only the heartbeat says it is alive
    taken, _ = await live.take_over(stream, WORKER_GROUP, "taker", 10)
    beating.cancel()
    assert taken == []
    assert (await r.xpending(stream, WORKER_GROUP))["consumers"] == [{"name": b"slow", "pending": 3}]


async def test_a_dead_consumers_entries_are_taken_once_with_their_delivery_counts(r, keys):
    stream = await _stream_with(r, 5)
    live = Liveness(r, keys, ttl_s=0.5)
    await _read(r, stream, "dead", 5)  # never announced itself, then went silent
    await asyncio.sleep(IDLE_S)
    (a, a_counts), (b, _) = await asyncio.gather(
        live.take_over(stream, WORKER_GROUP, "taker-a", 3), live.take_over(stream, WORKER_GROUP, "taker-b", 3)
    )
    ids = [e[0] for e in a + b]
    assert len(ids) == 5 and len(set(ids)) == 5  # all taken, none by both takers
    assert set(a_counts.values()) == {2}
    pending = await r.xpending(stream, WORKER_GROUP)
    assert {c["name"] for c in pending["consumers"]} <= {b"taker-a", b"taker-b"}


async def test_a_consumer_that_read_again_is_not_robbed_of_what_it_just_read(r, keys):
    stream = await _stream_with(r, 2)
    live = Liveness(r, keys, ttl_s=0.5)
    await _read(r, stream, "resumed", 1)
    await asyncio.sleep(IDLE_S)
    await _read(r, stream, "resumed", 1)  # it woke up and read: not silent, though its key is gone
    taken, _ = await live.take_over(stream, WORKER_GROUP, "taker", 10)
    assert taken == []


async def test_dead_consumers_holding_nothing_leave_the_group_and_no_other(r, keys):
    stream = await _stream_with(r, 1)
    live = Liveness(r, keys, ttl_s=0.5)
    for name in ("gone", "quiet-but-alive"):
        await r.xgroup_createconsumer(stream, WORKER_GROUP, name)
    await _read(r, stream, "holder", 1)
    await asyncio.sleep(IDLE_S)
    for alive in ("quiet-but-alive", "holder"):  # still beating
        await live.heartbeat(alive).beat()
    await live.take_over(stream, WORKER_GROUP, "taker", 10)
    names = {c["name"] for c in await r.xinfo_consumers(stream, WORKER_GROUP)}
    assert names == {b"quiet-but-alive", b"holder"}


async def test_late_results_of_a_consumer_taken_over_count_once(r, keys):
    """A worker paused past the TTL is treated as dead; when it wakes up and publishes, only one
    result reaches the results stream, whichever of the two publishes first."""
    store = JobStore(r, keys)
    reqs = await _create_job(store, "job_late", {"alpha": 2})
    stream = keys.model_stream("alpha", "batch")
    await ensure_group(r, stream, WORKER_GROUP)
    ids = [await r.xadd(stream, {"d": b"x"}) for _ in reqs]
    await _read(r, stream, "paused", 2)
    await asyncio.sleep(IDLE_S)
    taken, _ = await Liveness(r, keys, ttl_s=0.5).take_over(stream, WORKER_GROUP, "taker", 10)
    assert [e[0] for e in taken] == ids
    publisher = ResultPublisher(r, keys, "alpha")
    # request 0: the taker publishes first; request 1: the woken consumer does
    assert await publisher.publish([Outcome(1, ids[0], result=_result(reqs[0]))]) == 1
    assert await publisher.publish([Outcome(1, ids[0], result=_result(reqs[0]))]) == 0
    assert await publisher.publish([Outcome(1, ids[1], result=_result(reqs[1]))]) == 1
    assert await publisher.publish([Outcome(1, ids[1], result=_result(reqs[1]))]) == 0
    assert await r.xlen(keys.results_stream) == 2


async def _collect(r, keys, store: JobStore) -> None:
    collector = Collector(r, keys, store)
    await ensure_group(r, keys.results_stream, COLLECTOR_GROUP)
    reply = await r.xreadgroup(COLLECTOR_GROUP, collector.consumer, {keys.results_stream: ">"})
    if reply:
        await collector.handle(reply[0][1])


async def _routed_job(r, keys, models, store: JobStore, job_id: str, n: int) -> str:
    await _create_job(store, job_id, {"alpha": n})
    router = Router(r, keys, models)
    await ensure_group(r, keys.ingest_stream, ROUTER_GROUP)
    reply = await r.xreadgroup(ROUTER_GROUP, router.consumer, {keys.ingest_stream: ">"})
    await router.admit(reply[0][1])
    await router.feed_all()
    stream = keys.model_stream("alpha", "batch")
    assert await r.xlen(stream) == n
    return stream


async def test_a_stopping_job_without_a_live_worker_ends_with_exact_counts(r, keys, models):
    store = JobStore(r, keys)
    stream = await _routed_job(r, keys, models, store, "job_s", 6)
    await ensure_group(r, stream, WORKER_GROUP)
    await store.mark_started([("job_s", f"req_{i}", "alpha") for i in range(2)])
    await _read(r, stream, "dead-worker", 2)  # it died holding two requests; four were never read
    await asyncio.sleep(IDLE_S)
    assert await store.stop("job_s", RequestStatus.CANCELLED) == "cancelling"
    ctx = {"keys": keys, "stream_redis": r, "liveness": Liveness(r, keys, ttl_s=0.5)}
    assert await finish_stranded_jobs(ctx) == 6
    assert await finish_stranded_jobs(ctx) == 0  # nothing twice
    await _collect(r, keys, store)
    job = await store.get("job_s")
    assert job is not None and job.status == "cancelled"
    c = job.request_counts
    assert (c.total, c.cancelled, c.running, c.queued, c.succeeded) == (6, 6, 0, 0, 0)
    lines = [json.loads(line) for _, line in await store.read_results("job_s", None, 100)]
    assert sorted(line["custom_id"] for line in lines) == [f"c{i}" for i in range(6)]
    events = await r.xrange(keys.events_stream)
    assert [f[b"type"] for _, f in events if b"job." in f[b"type"]] == [b"job.cancelled"]
    assert 0 < await r.ttl(keys.job("job_s"))
    assert (await r.xpending(stream, WORKER_GROUP))["pending"] == 0
    last_read = (await r.xinfo_groups(stream))[0]["last-delivered-id"].decode()
    assert await r.xrange(stream, min="(" + last_read) == []  # nothing left unread either
    await finish_stranded_jobs(ctx)  # the ended job is no longer watched
    assert await r.zcard(keys.stopping_jobs) == 0
    doc = json.loads([f for _, f in events if f[b"type"] == b"job.cancelled"][0][EVENT_FIELD.encode()])
    assert doc["data"]["request_counts"]["cancelled"] == 6


async def test_a_stopping_job_is_left_to_its_live_workers(r, keys, models):
    store = JobStore(r, keys)
    stream = await _routed_job(r, keys, models, store, "job_l", 3)
    await ensure_group(r, stream, WORKER_GROUP)
    live = Liveness(r, keys, ttl_s=0.5)
    await live.heartbeat("busy-worker").beat()
    await _read(r, stream, "busy-worker", 1)
    await asyncio.sleep(IDLE_S)
    await live.heartbeat("busy-worker").beat()
    await store.stop("job_l", RequestStatus.CANCELLED)
    assert await finish_stranded_jobs({"keys": keys, "stream_redis": r, "liveness": live}) == 0
    assert await r.xlen(keys.results_stream) == 0
    assert await r.zrange(keys.stopping_jobs, 0, -1) == [b"job_l"]


async def test_a_running_job_is_never_dropped(r, keys, models):
    store = JobStore(r, keys)
    stream = await _routed_job(r, keys, models, store, "job_r", 3)
    ids = [entry_id for entry_id, _ in await r.xrange(stream)]
    dropper = DropStranded(r)
    args = {"job": keys.job("job_r"), "results_stream": keys.results_stream, "streams": keys.model_streams("alpha")}
    assert await dropper(**args, entry_ids=[[], ids]) == 0  # the script itself checks the job's state
    await r.zadd(keys.stopping_jobs, {"job_r": 1})  # even if it were listed as stopping
    assert await finish_stranded_jobs({"keys": keys, "stream_redis": r, "liveness": Liveness(r, keys, 0.5)}) == 0
    assert await r.xlen(stream) == 3 and await r.xlen(keys.results_stream) == 0
    assert await r.zcard(keys.stopping_jobs) == 0
